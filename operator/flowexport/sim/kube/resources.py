"""The resource types the simulator serves: the built-in ones, and those a CRD registers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RBAC = "rbac.authorization.k8s.io"
#: The key of the CustomResourceDefinition resource: storing one registers its resources.
CRDS = ("apiextensions.k8s.io", "customresourcedefinitions")


@dataclass
class ResourceType:
    """One served resource."""

    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    status: bool = False
    schema: dict[str, Any] | None = None
    columns: list[dict[str, Any]] = field(default_factory=list)

    @property
    def api_version(self) -> str:
        """`group/version`, or just the version for the core group."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        """(group, plural): how the store files the resource."""
        return (self.group, self.plural)


BUILTINS = [
    ResourceType(
        "",
        "v1",
        "Namespace",
        "namespaces",
        "namespace",
        False,
        ["ns"],
        columns=[{"name": "Status", "type": "string", "jsonPath": ".status.phase"}],
    ),
    ResourceType("", "v1", "Secret", "secrets", "secret", True),
    ResourceType("", "v1", "ConfigMap", "configmaps", "configmap", True, ["cm"]),
    ResourceType("", "v1", "Event", "events", "event", True, ["ev"]),
    ResourceType("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", True, ["sa"]),
    ResourceType(RBAC, "v1", "Role", "roles", "role", True),
    ResourceType(RBAC, "v1", "RoleBinding", "rolebindings", "rolebinding", True),
    ResourceType(RBAC, "v1", "ClusterRole", "clusterroles", "clusterrole", False),
    ResourceType(
        RBAC, "v1", "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", False
    ),
    ResourceType(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        "lease",
        True,
        columns=[{"name": "Holder", "type": "string", "jsonPath": ".spec.holderIdentity"}],
    ),
    ResourceType(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicy",
        "validatingadmissionpolicies",
        "validatingadmissionpolicy",
        False,
    ),
    ResourceType(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
        "validatingadmissionpolicybinding",
        False,
    ),
    ResourceType(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        "customresourcedefinition",
        False,
        ["crd", "crds"],
    ),
]


def crd_resource_types(crd: dict[str, Any]) -> list[ResourceType]:
    """The resource a CRD defines, once for each version it serves."""
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    return [
        ResourceType(
            spec.get("group", ""),
            version["name"],
            names.get("kind", ""),
            names.get("plural", ""),
            names.get("singular", names.get("plural", "")),
            spec.get("scope") == "Namespaced",
            names.get("shortNames", []),
            names.get("categories", []),
            "status" in version.get("subresources", {}),
            version.get("schema", {}).get("openAPIV3Schema"),
            version.get("additionalPrinterColumns", []),
        )
        for version in spec.get("versions", [])
        if version.get("served", True)
    ]


def with_type(kind: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` with its apiVersion and kind first, as the API server answers it."""
    return {"apiVersion": kind.api_version, "kind": kind.kind, **obj}
