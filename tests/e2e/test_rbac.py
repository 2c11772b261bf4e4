"""The operator under the Helm chart's RBAC: it runs as the chart's ServiceAccount against a
simulator that enforces the chart's Roles and bindings, through a whole FlowExport lifecycle.

Proves both directions of least privilege: nothing the operator does is refused (the chart
grants enough), and every verb the chart grants is used (it grants nothing idle).
"""

from __future__ import annotations

from typing import Any

import pytest

from flowexport.sim.kube.rbac import SA_PREFIX, Attributes, rule_allows
from tests.chart import of_kind, render
from tests.e2e.conftest import FE, NS, Stack, eventually
from tests.e2e.test_operator import write_flows

NAMESPACED = {"watch": {"scope": "namespaces", "namespaces": [NS]}}
CLUSTER_WIDE = {"watch": {"scope": "all"}}
#: Two replicas sharing FlowExports through Leases (this one runs alone: it takes them all).
SHARDED = {**NAMESPACED, "replicas": 2, "sharding": {"leaseSeconds": 3}}


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


def lifecycle(stack: Stack) -> None:
    """Everything the operator does for a FlowExport: reconcile, ingest, status, events, a
    Secret read, and deletion behind the finalizer."""
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
    "stack", [NAMESPACED, CLUSTER_WIDE, SHARDED], indirect=True, ids=["ns", "all", "sharded"]
)
def test_the_chart_grants_exactly_what_the_operator_uses(
    stack: Stack, request: pytest.FixtureRequest
) -> None:
    values = request.node.callspec.params["stack"]
    lifecycle(stack)
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
