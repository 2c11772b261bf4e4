"""The operator under the Helm chart's RBAC: it runs as the chart's ServiceAccount against a
simulator that enforces the chart's Roles and bindings, through a whole FlowExport lifecycle.

Proves both directions of least privilege: nothing the operator does is refused (the chart
grants enough), and every verb the chart grants is used (it grants nothing idle).
"""

from __future__ import annotations

from typing import Any

import pytest

from flowexport.sim.kube.rbac import SA_PREFIX, Attributes, rule_allows
from tests.chart import RELEASE_NAMESPACE, of_kind, render
from tests.cloud import REGION
from tests.e2e.conftest import FE, NS, Stack, eventually
from tests.e2e.test_operator import write_flows

NAMESPACED = {"watch": {"scope": "namespaces", "namespaces": [NS]}}
CLUSTER_WIDE = {"watch": {"scope": "all"}}
#: Two replicas sharing FlowExports through Leases (this one runs alone: it takes them all).
SHARDED = {**NAMESPACED, "replicas": 2, "sharding": {"leaseSeconds": 3}}
#: Secrets granted by name only (RBAC resourceNames), read by name.
BY_NAME = {**NAMESPACED, "rbac": {"secretNames": ["pce-key", "aws-keys"]}}
#: Without the admission policies (what RBAC alone allows).
NO_POLICY = {**SHARDED, "rbac": {"admissionPolicy": {"enabled": False}}}


def operator_requests(stack: Stack) -> list[dict[str, Any]]:
    """What the operator's ServiceAccount asked the API server (resource requests only)."""
    entries = stack.sim.requests
    return [e for e in entries if e.get("user", "").startswith(SA_PREFIX) and "attributes" in e]


def granted(values: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(apiGroup, resource, verb) for every verb the chart's Roles and ClusterRoles grant."""
    rendered = render(values)
    rules = [
        r for o in of_kind(rendered, "Role") + of_kind(rendered, "ClusterRole") for r in o["rules"]
    ]
    return sorted(
        {
            (g, res, v)
            for r in rules
            for g in r["apiGroups"]
            for res in r["resources"]
            for v in r["verbs"]
        }
    )


GRANTS = "/apis/flowexport.io/v1alpha1/accountgrants"

SETS = f"/apis/flowexport.io/v1alpha1/namespaces/{NS}/flowexportsets"


def fleet_lifecycle(stack: Stack) -> None:
    """What the operator does for a FlowExportSet: read the AccountGrants, discover, create
    the FlowExport it generates (and its status), delete it with the set."""
    stack.kube.post(
        GRANTS,
        json={
            "apiVersion": "flowexport.io/v1alpha1",
            "kind": "AccountGrant",
            "metadata": {"name": "own-account"},
            "spec": {"accountId": "123456789012", "namespaces": {"names": [NS]}},
        },
    )
    stack.kube.post(
        SETS,
        json={
            "apiVersion": "flowexport.io/v1alpha1",
            "kind": "FlowExportSet",
            "metadata": {"name": "fleet", "namespace": NS},
            "spec": {
                "accounts": ["123456789012"],
                "regions": [REGION],
                "vpcs": {"ids": [stack.vpc]},
                "flowLogs": "Ensure",
                "destination": {"logGroups": {"deliverLogsRoleName": "d"}},
                "refreshSeconds": 5,
                "template": {
                    "aws": {"endpointUrl": stack.loop.moto_url},
                    "pce": {
                        "url": stack.loop.pce.url,
                        "orgId": 1,
                        "credentialsSecretRef": {"name": "pce-key"},
                    },
                },
            },
        },
    )
    generated = f"{FE}?labelSelector=flowexport.io/set=fleet"
    eventually(lambda: len(stack.kube.get(generated).json()["items"]) == 1, what="generated")
    eventually(
        lambda: (
            (stack.kube.get(f"{SETS}/fleet").json().get("status") or {}).get("flowExports") == 1
        ),
        what="the set's status",
    )
    stack.kube.delete(f"{SETS}/fleet")
    eventually(lambda: stack.kube.get(generated).json()["items"] == [], what="generated gone")
    eventually(lambda: stack.kube.get(f"{SETS}/fleet").status_code == 404, what="set gone")


def lifecycle(stack: Stack) -> None:
    """Everything the operator does for a FlowExport: reconcile, ingest, status, events, a
    Secret read, and deletion behind the finalizer; and an AccountGrant's status."""
    grant = {
        "apiVersion": "flowexport.io/v1alpha1",
        "kind": "AccountGrant",
        "metadata": {"name": "security-x"},
        "spec": {"accountId": "210987654321", "namespaces": {"names": [NS]}},
    }
    assert stack.kube.post(GRANTS, json=grant).status_code == 201
    eventually(
        lambda: stack.kube.get(f"{GRANTS}/security-x").json().get("status"),
        what="the grant's status, written by the operator",
    )
    stack.apply(stack.flowexport())
    eventually(lambda: stack.condition("prod", "Ready") == ("True", "Ready"), what="Ready")
    write_flows(stack, "/flowexport/prod", 5)
    eventually(lambda: len(stack.received()) == 5, what="5 flows at the PCE")
    eventually(
        lambda: stack.get()["status"].get("counts", {}).get("flowsUploaded") == 5,
        what="status counts",
    )
    stack.kube.delete(f"{FE}/prod")
    eventually(lambda: stack.kube.get(f"{FE}/prod").status_code == 404, what="deletion")


@pytest.mark.parametrize(
    "stack",
    [NAMESPACED, CLUSTER_WIDE, SHARDED, BY_NAME],
    indirect=True,
    ids=["ns", "all", "sharded", "secrets-by-name"],
)
def test_the_chart_grants_exactly_what_the_operator_uses(
    stack: Stack, request: pytest.FixtureRequest
) -> None:
    values = request.node.callspec.params["stack"]
    lifecycle(stack)
    fleet_lifecycle(stack)
    assert stack.operator.metric("flowexport_workers") == 0  # the FlowExport is gone
    assert stack.operator.stop() == 0  # what a clean stop does is part of what it uses
    requests = operator_requests(stack)
    refused = [(e["method"], e["path"], e["status"]) for e in requests if e["status"] == 403]
    assert refused == [], f"the chart's RBAC refused the operator: {refused}"
    log = stack.operator.tail(2000)
    assert "forbidden" not in log.lower()
    # It ran with the chart's own arguments: JSON logs (operator.logFormat), its metrics port.
    assert all(line.startswith("{") for line in log.splitlines() if line.strip())
    unused = []
    for group, resource, verb in granted(values):
        rule = {"apiGroups": [group], "resources": [resource], "verbs": [verb]}

        def covered(attrs: Attributes, rule: dict[str, Any] = rule) -> bool:
            return rule_allows(rule, attrs)

        if not any(covered(e["attributes"]) for e in requests):
            unused.append((group, resource, verb))
    assert unused == [], f"the chart grants verbs the operator never used: {unused}"
    reasons = {e["reason"] for e in stack.events()}
    assert "Ready" in reasons  # the Events were created under the chart's RBAC


RBAC = "/apis/rbac.authorization.k8s.io/v1"
ACCESS_FINALIZER = "flowexport.io/operator-access"


def access_path(values: dict[str, Any]) -> str:
    """The API path of the chart's RoleBinding in the watched namespace."""
    rendered = render(values)
    (binding,) = [b for b in of_kind(rendered, "RoleBinding") if b["metadata"]["namespace"] == NS]
    return f"{RBAC}/namespaces/{NS}/rolebindings/{binding['metadata']['name']}"


@pytest.mark.parametrize("stack", [NAMESPACED], indirect=True, ids=["ns"])
def test_the_operator_holds_its_access_while_a_flowexport_awaits_its_clean_up(
    stack: Stack,
) -> None:
    """Namespaced install: the RoleBinding that gives the operator a namespace carries its
    finalizer while a FlowExport there holds the clean-up finalizer (deleting the namespace
    cannot take its access away first), and loses it after the last clean-up (nothing left
    behind for `helm uninstall`)."""
    path = access_path(NAMESPACED)

    def held() -> bool:
        metadata = stack.kube.get(path).json()["metadata"]
        return ACCESS_FINALIZER in (metadata.get("finalizers") or [])

    assert not held()  # nothing to clean up yet: nothing held
    stack.apply(stack.flowexport())
    eventually(held, what="the access held")
    eventually(lambda: stack.condition("prod", "Ready") == ("True", "Ready"), what="Ready")
    stack.kube.delete(f"{FE}/prod")
    eventually(lambda: stack.kube.get(f"{FE}/prod").status_code == 404, what="deletion")
    eventually(lambda: not held(), what="the access let go")
    assert "forbidden" not in stack.operator.tail(2000).lower()


@pytest.mark.parametrize("stack", [NAMESPACED], indirect=True, ids=["ns"])
def test_a_namespaced_install_cannot_read_secrets_elsewhere(stack: Stack) -> None:
    """The chart's Role gives the operator no reach outside the watched namespaces."""
    token = stack.sim.tokens
    (sa_token,) = [t for t, user in token.items() if user.startswith(SA_PREFIX)]
    headers = {"Authorization": f"Bearer {sa_token}"}
    stack.kube.post("/api/v1/namespaces", json={"metadata": {"name": "payments"}})
    stack.kube.post(
        "/api/v1/namespaces/payments/secrets",
        json={"metadata": {"name": "db"}, "stringData": {"password": "x"}},
    )
    elsewhere = stack.kube.get("/api/v1/namespaces/payments/secrets/db", headers=headers)
    assert elsewhere.status_code == 403
    assert elsewhere.json()["reason"] == "Forbidden"
    here = stack.kube.get(f"/api/v1/namespaces/{NS}/secrets/pce-key", headers=headers)
    assert here.status_code == 200
    elsewhere = stack.kube.get("/api/v1/namespaces/payments/secrets", headers=headers)
    assert elsewhere.status_code == 403  # no list outside the watched namespaces either


def as_operator(stack: Stack) -> dict[str, str]:
    """Headers that authenticate as the chart's ServiceAccount."""
    (sa_token,) = [t for t, user in stack.sim.tokens.items() if user.startswith(SA_PREFIX)]
    return {"Authorization": f"Bearer {sa_token}"}


JSON_PATCH = {"Content-Type": "application/json-patch+json"}
MERGE = {"Content-Type": "application/merge-patch+json"}


@pytest.mark.parametrize(
    "stack", [SHARDED, NO_POLICY], indirect=True, ids=["policies", "rbac-only"]
)
def test_the_admission_policies_refuse_what_rbac_cannot(
    stack: Stack, request: pytest.FixtureRequest
) -> None:
    """Issue 23 item 9: RBAC lets the operator's ServiceAccount patch every Secret of a watched
    namespace and write any Lease of its namespace; the chart's ValidatingAdmissionPolicies
    (enforced by the simulator with cel-python; a real API server evaluates them with cel-go)
    leave it the labelled Secrets' finalizers, its shard Leases, and never a spec. Without
    them (rbac-only) each refused write below goes through."""
    policies = request.node.callspec.id == "policies"
    operator = as_operator(stack)
    binding = access_path(SHARDED)
    subjects = stack.kube.get(binding).json()["subjects"]
    secrets = f"/api/v1/namespaces/{NS}/secrets"
    stack.kube.post(secrets, json={"metadata": {"name": "db"}, "stringData": {"password": "x"}})
    leases = f"/apis/coordination.k8s.io/v1/namespaces/{RELEASE_NAMESPACE}/leases"
    stack.kube.post(leases, json={"metadata": {"name": "other-app"}, "spec": {}})
    stack.apply(stack.flowexport())
    eventually(lambda: stack.condition("prod", "Ready") == ("True", "Ready"), what="Ready")

    def finalizer(name: str) -> Any:
        patch = {"metadata": {"finalizers": ["example.com/held"]}}
        return stack.kube.patch(f"{secrets}/{name}", json=patch, headers={**operator, **MERGE})

    refused = {
        "an unlabelled Secret's finalizers": finalizer("db"),
        "a labelled Secret's data": stack.kube.patch(
            f"{secrets}/pce-key",
            json={"stringData": {"password": "stolen"}},
            headers={**operator, **MERGE},
        ),
        "a FlowExport's spec": stack.kube.patch(
            f"{FE}/prod",
            json={"spec": {"pce": {"url": "https://elsewhere.example.com"}}},
            headers={**operator, **MERGE},
        ),
        "a FlowExport no FlowExportSet generates": stack.kube.post(
            FE, json=stack.flowexport("rogue"), headers=operator
        ),
        "another application's Lease": stack.kube.delete(f"{leases}/other-app", headers=operator),
        "a Lease not named as the operator's": stack.kube.post(
            leases,
            json={"metadata": {"name": "grab", "labels": {"flowexport.io/shard-group": "x"}}},
            headers=operator,
        ),
        "its RoleBinding's subjects": stack.kube.patch(
            binding,
            json={
                "subjects": [*subjects, {"kind": "ServiceAccount", "name": "x", "namespace": NS}]
            },
            headers={**operator, **MERGE},
        ),
    }
    codes = {what: answer.status_code for what, answer in refused.items()}
    if policies:
        assert set(codes.values()) == {403}, codes
        reasons = {what: answer.json()["message"] for what, answer in refused.items()}
        assert all("ValidatingAdmissionPolicy" in m for m in reasons.values()), reasons
    else:
        assert 403 not in codes.values(), codes  # RBAC alone lets every one through
    # What the operator does itself stays allowed: the AWS keys held by its finalizer, its
    # own Lease renewed, its annotations on the FlowExport, its RoleBinding held by its
    # finalizer.
    allowed = [
        finalizer("aws-keys"),
        stack.kube.patch(
            f"{FE}/prod",
            json={"metadata": {"annotations": {"example.com/seen": "1"}}},
            headers={**operator, **MERGE},
        ),
        stack.kube.patch(
            binding,
            json={"metadata": {"finalizers": [ACCESS_FINALIZER]}},
            headers={**operator, **MERGE},
        ),
    ]
    assert [a.status_code for a in allowed] == [200, 200, 200], [a.text for a in allowed]
    assert stack.condition("prod", "Ready") == ("True", "Ready")
    assert "ValidatingAdmissionPolicy" not in stack.operator.tail(2000)


@pytest.mark.parametrize("stack", [BY_NAME], indirect=True, ids=["secrets-by-name"])
def test_with_secret_names_the_operator_reads_no_other_secret(stack: Stack) -> None:
    """rbac.secretNames: the Role grants get and patch on those names only; the operator
    reads them by name (no list, no watch), and any other Secret is out of its reach."""
    stack.apply(stack.flowexport())
    eventually(lambda: stack.condition("prod", "Ready") == ("True", "Ready"), what="Ready")
    requests = operator_requests(stack)
    verbs = {(e["attributes"].resource, e["attributes"].verb) for e in requests}
    assert ("secrets", "list") not in verbs and ("secrets", "watch") not in verbs
    assert ("secrets", "get") in verbs
    operator = as_operator(stack)
    secrets = f"/api/v1/namespaces/{NS}/secrets"
    stack.kube.post(secrets, json={"metadata": {"name": "db"}, "stringData": {"password": "x"}})
    assert stack.kube.get(f"{secrets}/db", headers=operator).status_code == 403
    assert stack.kube.get(secrets, headers=operator).status_code == 403  # no list
    assert stack.kube.get(f"{secrets}/pce-key", headers=operator).status_code == 200
