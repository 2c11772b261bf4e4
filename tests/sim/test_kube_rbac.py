"""The kube simulator's authentication and RBAC, over HTTP, as the real API server decides."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from flowexport.sim.kube import KubeSimulator
from flowexport.sim.kube.rbac import Attributes, rule_allows
from flowexport.sim.serve import ServerThread

RBAC = "/apis/rbac.authorization.k8s.io/v1"
READ_SECRETS = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}


@pytest.fixture
def api() -> Iterator[tuple[KubeSimulator, httpx.Client]]:
    sim = KubeSimulator()
    with ServerThread(sim.app) as url, httpx.Client(base_url=url, timeout=10) as admin:
        for ns in ("team-a", "team-b"):
            admin.post("/api/v1/namespaces", json={"metadata": {"name": ns}})
            admin.post(
                f"/api/v1/namespaces/{ns}/secrets",
                json={"metadata": {"name": "key"}, "stringData": {"k": "v"}},
            )
        yield sim, admin


def as_account(sim: KubeSimulator, admin: httpx.Client, ns: str, name: str) -> httpx.Client:
    token = sim.service_account_token(ns, name)
    return httpx.Client(
        base_url=str(admin.base_url), timeout=10, headers={"Authorization": f"Bearer {token}"}
    )


def bind(admin: httpx.Client, where: str, kind: str, role: dict[str, Any], subject_ns: str) -> None:
    """Create `role` (Role or ClusterRole) and a binding of it to the `ops` account."""
    name = role["metadata"]["name"]
    role_kind = "ClusterRole" if "clusterroles" in where else "Role"
    assert admin.post(where, json=role).status_code == 201
    binding = {
        "metadata": {
            "name": name,
            **({"namespace": role["metadata"].get("namespace")} if kind == "rolebindings" else {}),
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": "ops", "namespace": subject_ns}],
    }
    ns = binding["metadata"].get("namespace")
    path = f"{RBAC}/namespaces/{ns}/{kind}" if ns else f"{RBAC}/{kind}"
    assert admin.post(path, json=binding).status_code == 201


def test_a_service_account_can_do_nothing_until_bound(api: Any) -> None:
    sim, admin = api
    with as_account(sim, admin, "team-a", "ops") as ops:
        answer = ops.get("/api/v1/namespaces/team-a/secrets/key")
        assert answer.status_code == 403
        body = answer.json()
        assert body["reason"] == "Forbidden"
        assert body["message"] == (
            'secrets "key" is forbidden: User "system:serviceaccount:team-a:ops" cannot get '
            'resource "secrets" in API group "" in the namespace "team-a"'
        )
        assert ops.get("/api").status_code == 200  # discovery is open to the authenticated
        assert ops.get("/apis").status_code == 200


def test_a_role_applies_in_its_own_namespace_only(api: Any) -> None:
    sim, admin = api
    role = {"metadata": {"name": "reader", "namespace": "team-a"}, "rules": [READ_SECRETS]}
    bind(admin, f"{RBAC}/namespaces/team-a/roles", "rolebindings", role, "team-a")
    with as_account(sim, admin, "team-a", "ops") as ops:
        assert ops.get("/api/v1/namespaces/team-a/secrets/key").status_code == 200
        assert ops.get("/api/v1/namespaces/team-b/secrets/key").status_code == 403
        assert ops.get("/api/v1/namespaces/team-a/secrets").status_code == 403  # list != get
        assert ops.get("/api/v1/secrets").status_code == 403  # cluster scope
        # The audit records who did what, in RBAC's terms.
        entry = sim.requests[-1]
        assert entry["user"] == "system:serviceaccount:team-a:ops"
        assert entry["attributes"] == Attributes("list", "", "secrets", None, None, None)


def test_a_cluster_role_binding_applies_everywhere(api: Any) -> None:
    sim, admin = api
    role = {
        "metadata": {"name": "reader"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "watch"]}],
    }
    bind(admin, f"{RBAC}/clusterroles", "clusterrolebindings", role, "team-a")
    with as_account(sim, admin, "team-a", "ops") as ops:
        assert ops.get("/api/v1/secrets").status_code == 200
        assert ops.get("/api/v1/namespaces/team-b/secrets").status_code == 200
        assert ops.get("/api/v1/namespaces/team-b/secrets/key").status_code == 403  # no get
        watch = ops.get("/api/v1/namespaces/team-b/secrets?watch=true&timeoutSeconds=1")
        assert watch.status_code == 200


def test_a_cluster_role_bound_in_a_namespace_applies_there_only(api: Any) -> None:
    sim, admin = api
    assert (
        admin.post(
            f"{RBAC}/clusterroles", json={"metadata": {"name": "reader"}, "rules": [READ_SECRETS]}
        ).status_code
        == 201
    )
    binding = {
        "metadata": {"name": "r", "namespace": "team-b"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "reader",
        },
        "subjects": [{"kind": "Group", "name": "system:serviceaccounts:team-a"}],
    }
    assert admin.post(f"{RBAC}/namespaces/team-b/rolebindings", json=binding).status_code == 201
    with as_account(sim, admin, "team-a", "ops") as ops:
        assert ops.get("/api/v1/namespaces/team-b/secrets/key").status_code == 200
        assert ops.get("/api/v1/namespaces/team-a/secrets/key").status_code == 403
    with as_account(sim, admin, "team-b", "ops") as other:  # not in the bound group
        assert other.get("/api/v1/namespaces/team-b/secrets/key").status_code == 403


def test_an_unknown_token_is_unauthorized(api: Any) -> None:
    _, admin = api
    answer = admin.get("/api/v1/namespaces", headers={"Authorization": "Bearer forged"})
    assert answer.status_code == 401
    assert answer.json()["reason"] == "Unauthorized"


@pytest.mark.parametrize(
    ("rule", "attrs", "allowed"),
    [
        (
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            Attributes("delete", "apps", "deployments", None, "a", "x"),
            True,
        ),
        (
            {"apiGroups": ["flowexport.io"], "resources": ["flowexports"], "verbs": ["patch"]},
            Attributes("patch", "flowexport.io", "flowexports", "status", "a", "x"),
            False,
        ),
        (
            {
                "apiGroups": ["flowexport.io"],
                "resources": ["flowexports/status"],
                "verbs": ["patch"],
            },
            Attributes("patch", "flowexport.io", "flowexports", "status", "a", "x"),
            True,
        ),
        (
            {"apiGroups": ["flowexport.io"], "resources": ["*/status"], "verbs": ["patch"]},
            Attributes("patch", "flowexport.io", "flowexports", "status", "a", "x"),
            True,
        ),
        (
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["k"]},
            Attributes("get", "", "secrets", None, "a", "k"),
            True,
        ),
        (
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["k"]},
            Attributes("get", "", "secrets", None, "a", "other"),
            False,
        ),
        (
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "verbs": ["list"],
                "resourceNames": ["k"],
            },
            Attributes("list", "", "secrets", None, "a", None),
            False,
        ),
        (
            {"apiGroups": ["apps"], "resources": ["secrets"], "verbs": ["get"]},
            Attributes("get", "", "secrets", None, "a", "k"),
            False,
        ),
    ],
)
def test_rule_matching(rule: dict[str, Any], attrs: Attributes, allowed: bool) -> None:
    assert rule_allows(rule, attrs) is allowed


def test_impersonation_is_for_the_admin_and_then_rbac_applies(api: Any) -> None:
    sim, admin = api
    as_ops = {"Impersonate-User": "system:serviceaccount:team-a:ops"}
    assert admin.get("/api/v1/namespaces/team-a/secrets/key", headers=as_ops).status_code == 403
    role = {"metadata": {"name": "reader", "namespace": "team-a"}, "rules": [READ_SECRETS]}
    bind(admin, f"{RBAC}/namespaces/team-a/roles", "rolebindings", role, "team-a")
    assert admin.get("/api/v1/namespaces/team-a/secrets/key", headers=as_ops).status_code == 200
    with as_account(sim, admin, "team-b", "intruder") as intruder:
        answer = intruder.get("/api/v1/namespaces/team-a/secrets/key", headers=as_ops)
        assert answer.status_code == 403
        assert "cannot impersonate" in answer.json()["message"]
