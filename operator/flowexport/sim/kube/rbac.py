"""RBAC authorization for the Kubernetes API simulator, as the real API server's RBAC
authorizer decides it: request attributes (verb, API group, resource, subresource, namespace,
name) are allowed when a rule of a Role or ClusterRole bound to the user covers them.

A ClusterRole bound by a ClusterRoleBinding applies in every namespace and to cluster-scoped
resources; a Role, or a ClusterRole bound by a RoleBinding, only in the binding's namespace.
Non-resource URLs (`/version`, `/api`, `/apis`, `/openapi`) are open to every authenticated
user, as the default `system:discovery` role makes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SA_PREFIX = "system:serviceaccount:"

#: (method, names one object) -> the RBAC verb; a GET with watch=true is "watch"
_VERB = {
    ("GET", True): "get",
    ("GET", False): "list",
    ("POST", False): "create",
    ("PUT", True): "update",
    ("PATCH", True): "patch",
    ("DELETE", True): "delete",
    ("DELETE", False): "deletecollection",
}


@dataclass(frozen=True)
class Attributes:
    """What a resource request asks to do, in RBAC's terms."""

    verb: str
    group: str
    resource: str
    subresource: str | None
    namespace: str | None
    name: str | None

    @property
    def full_resource(self) -> str:
        """`resource` or `resource/subresource`, as rules name them."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    def describe(self) -> str:
        """The API server's wording of what was refused."""
        group = f'"{self.group}"'
        where = (
            f' in the namespace "{self.namespace}"' if self.namespace else " at the cluster scope"
        )
        return f'cannot {self.verb} resource "{self.full_resource}" in API group {group}{where}'


def attributes(
    method: str,
    group: str,
    resource: str,
    subresource: str | None,
    namespace: str | None,
    name: str | None,
    watch: bool,
) -> Attributes:
    """The RBAC attributes of a resource request."""
    verb = "watch" if method == "GET" and watch else _VERB.get((method, name is not None), "")
    return Attributes(verb, group, resource, subresource, namespace, name)


def _covers(values: Iterable[str], wanted: str) -> bool:
    return any(v in ("*", wanted) for v in values)


def rule_allows(rule: Mapping[str, Any], attrs: Attributes) -> bool:
    """Whether one PolicyRule covers the request."""
    if not _covers(rule.get("verbs", []), attrs.verb):
        return False
    if not _covers(rule.get("apiGroups", []), attrs.group):
        return False
    resources = rule.get("resources", [])
    star_sub = f"*/{attrs.subresource}" if attrs.subresource else None
    if not (_covers(resources, attrs.full_resource) or (star_sub and star_sub in resources)):
        return False
    names = rule.get("resourceNames") or []
    return not names or (attrs.name is not None and attrs.name in names)


def service_account_user(namespace: str, name: str) -> str:
    """The user name a ServiceAccount authenticates as."""
    return f"{SA_PREFIX}{namespace}:{name}"


def service_account_of(user: str) -> tuple[str, str] | None:
    """(namespace, name) when `user` is a ServiceAccount, else None."""
    if not user.startswith(SA_PREFIX):
        return None
    namespace, _, name = user.removeprefix(SA_PREFIX).partition(":")
    return namespace, name


def subject_matches(subject: Mapping[str, Any], user: str, groups: Iterable[str]) -> bool:
    """Whether a binding's subject is this user (or one of its groups)."""
    kind = subject.get("kind")
    if kind == "User":
        return bool(subject.get("name") == user)
    if kind == "Group":
        return subject.get("name") in set(groups)
    account = service_account_of(user)
    if kind == "ServiceAccount" and account is not None:
        return (subject.get("namespace"), subject.get("name")) == account
    return False


def groups_of(user: str) -> list[str]:
    """The groups the API server puts an authenticated user in."""
    groups = ["system:authenticated"]
    account = service_account_of(user)
    if account is not None:
        groups += ["system:serviceaccounts", f"system:serviceaccounts:{account[0]}"]
    return groups


@dataclass(frozen=True)
class RbacObjects:
    """The RBAC objects stored in the cluster, by kind, keyed by (namespace, name)."""

    roles: Mapping[tuple[str, str], Mapping[str, Any]]
    cluster_roles: Mapping[tuple[str, str], Mapping[str, Any]]
    role_bindings: Mapping[tuple[str, str], Mapping[str, Any]]
    cluster_role_bindings: Mapping[tuple[str, str], Mapping[str, Any]]

    def rules_for(self, user: str, namespace: str | None) -> list[Mapping[str, Any]]:
        """Every rule that applies to `user` for a request in `namespace` (None: cluster)."""
        groups = groups_of(user)
        rules: list[Mapping[str, Any]] = []
        for binding in self.cluster_role_bindings.values():
            if any(subject_matches(s, user, groups) for s in binding.get("subjects") or []):
                rules += self._role_rules(binding.get("roleRef", {}), None)
        if namespace is not None:
            for (ns, _), binding in self.role_bindings.items():
                if ns != namespace:
                    continue
                if any(subject_matches(s, user, groups) for s in binding.get("subjects") or []):
                    rules += self._role_rules(binding.get("roleRef", {}), namespace)
        return rules

    def _role_rules(self, ref: Mapping[str, Any], namespace: str | None) -> list[Mapping[str, Any]]:
        name = ref.get("name", "")
        if ref.get("kind") == "ClusterRole":
            role = self.cluster_roles.get(("", name))
        elif ref.get("kind") == "Role" and namespace is not None:
            role = self.roles.get((namespace, name))
        else:
            role = None
        return list(role.get("rules") or []) if role else []

    def allows(self, user: str, attrs: Attributes) -> bool:
        """Whether RBAC lets `user` make the request."""
        return any(rule_allows(r, attrs) for r in self.rules_for(user, attrs.namespace))
