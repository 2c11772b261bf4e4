"""AccountGrant on the real API server (issue 27 item 1): the cluster-scoped CRD admits and
refuses the same grants as the simulator, serves its status subresource and no namespaced
path; and the operator, as the chart's ServiceAccount under the chart's RBAC (its ClusterRole
for accountgrants and namespaces), refuses a FlowExport naming an account its namespace was
not granted (AccountNotGranted, not one AWS request), writes the grant's status, and lets the
FlowExport through once a grant names its namespace, without a restart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from flowexport.api.crd import ACCOUNTGRANT_CRD, build_crd
from flowexport.sim.awsfaults import AWSFaultProxy
from flowexport.sim.kube import KubeSimulator
from flowexport.sim.serve import ServerThread
from tests.cloud import KEYS
from tests.realkube.conftest import FE_API, wait_for
from tests.realkube.test_operator import RealStack, real

__all__ = ["real"]

GRANTS = f"{FE_API}/accountgrants"
X = "210987654321"
MEMBER = f"arn:aws:iam::{X}:role/flowexport-member"
MERGE = {"Content-Type": "application/merge-patch+json"}


def grant(name: str, namespaces: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "flowexport.io/v1alpha1",
        "kind": "AccountGrant",
        "metadata": {"name": name},
        "spec": {
            "accountId": X,
            "roleArn": MEMBER,
            "externalId": "realkube-7f3a",
            "namespaces": namespaces,
            **spec,
        },
    }


OTHER_ROLE = "arn:aws:iam::123456789012:role/flowexport-member"
IS_NOT_AN_OPERATOR = {"key": "t", "operator": "Is"}
CASES: list[tuple[str, dict[str, Any]]] = [
    ("valid", grant("g", {"names": ["a", "b"]})),
    ("selector", grant("g", {"selector": {"matchLabels": {"team": "x"}}})),
    ("own-identity", grant("g", {"names": ["a"]}, roleArn=None, externalId=None)),
    ("regions", grant("g", {"names": ["a"]}, regions=["eu-west-1"])),
    ("role-of-another-account", grant("g", {"names": ["a"]}, roleArn=OTHER_ROLE)),
    ("no-namespaces", grant("g", {})),
    ("account-pattern", grant("g", {"names": ["a"]}, accountId="12")),
    ("external-id-short", grant("g", {"names": ["a"]}, externalId="x")),
    ("namespace-name", grant("g", {"names": ["Not_A_Namespace"]})),
    ("selector-operator", grant("g", {"selector": {"matchExpressions": [IS_NOT_AN_OPERATOR]}})),
    ("unknown-field", grant("g", {"names": ["a"]}, role="x")),
]  # fmt: skip


@pytest.fixture(scope="module")
def simulated() -> Iterator[httpx.Client]:
    sim = KubeSimulator(history=50)
    with ServerThread(sim.app) as url, httpx.Client(base_url=url, timeout=30) as client:
        made = client.post(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            json=build_crd(ACCOUNTGRANT_CRD),
        )
        assert made.status_code == 201, made.text
        yield client


def _clean(body: dict[str, Any]) -> dict[str, Any]:
    spec = {k: v for k, v in body["spec"].items() if v is not None}
    return {**body, "spec": spec}


def _verdict(client: httpx.Client, body: dict[str, Any]) -> tuple[int, list[str]]:
    answer = client.post(
        GRANTS, json=_clean(body), params={"dryRun": "All", "fieldValidation": "Strict"}
    )
    causes = answer.json().get("details", {}).get("causes", []) if answer.status_code >= 400 else []
    return answer.status_code, sorted(c.get("field", "") for c in causes)


@pytest.mark.parametrize(("case", "body"), CASES, ids=[c for c, _ in CASES])
def test_the_real_server_and_the_simulator_agree_on_grants(
    admin: httpx.Client,
    crd: dict[str, Any],
    simulated: httpx.Client,
    case: str,
    body: dict[str, Any],
) -> None:
    real_verdict = _verdict(admin, body)
    assert real_verdict == _verdict(simulated, body)
    assert real_verdict[0] == (
        201
        if case in ("valid", "selector", "own-identity", "regions")
        else 422
        if case != "unknown-field"
        else 400
    ), real_verdict


def test_cluster_scope_and_status_on_the_real_server(
    admin: httpx.Client, crd: dict[str, Any]
) -> None:
    made = admin.post(GRANTS, json=grant("scoped", {"names": ["a"]}))
    assert made.status_code == 201, made.text
    try:
        assert "namespace" not in made.json()["metadata"]
        assert admin.get(f"{FE_API}/namespaces/default/accountgrants").status_code == 404
        status = {"status": {"observedGeneration": 1, "flowExports": 2}}
        patched = admin.patch(f"{GRANTS}/scoped/status", content=json.dumps(status), headers=MERGE)
        assert patched.status_code == 200, patched.text
        got = admin.get(f"{GRANTS}/scoped").json()
        assert got["status"]["flowExports"] == 2 and got["metadata"]["generation"] == 1
    finally:
        admin.delete(f"{GRANTS}/scoped")


def condition(
    real: RealStack, name: str, namespace: str, type_: str
) -> tuple[str, str, str] | None:
    for c in real.get(name, namespace).get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return c["status"], c["reason"], c.get("message", "")
    return None


def test_the_operator_refuses_an_ungranted_account_then_lets_it_through(real: RealStack) -> None:
    real.operator.stop()  # restarted with an identity of its own (its 'IRSA')
    real.operator.env.update(
        {"AWS_ACCESS_KEY_ID": KEYS.access_key_id, "AWS_SECRET_ACCESS_KEY": KEYS.secret_access_key}
    )
    real.operator.start()
    recorder = AWSFaultProxy(real.moto_url)
    namespace = "grants-b"
    real.namespace(namespace)
    with ServerThread(recorder.app) as proxy_url:
        other = real.admin.post(GRANTS, json=grant("elsewhere", {"names": ["grants-a"]}))
        assert other.status_code == 201, other.text
        body = real.flowexport("acct", namespace)
        aws = body["spec"]["aws"]
        del aws["credentialsSecretRef"]
        aws.update(accountId=X, endpointUrl=proxy_url)
        answer = real.admin.post(real.path(namespace=namespace), json=body)
        assert answer.status_code == 201, answer.text
        try:
            refused = wait_for(
                lambda: condition(real, "acct", namespace, "Ready"), 45, "a Ready condition"
            )
            assert refused[:2] == ("False", "AccountNotGranted"), refused
            assert "namespace grants-b may not use AWS account 210987654321" in refused[2]
            assert recorder.hits == []
            # the operator wrote the grant's status under the chart's RBAC
            status = wait_for(
                lambda: real.admin.get(f"{GRANTS}/elsewhere").json().get("status"), 30, "status"
            )
            assert status["observedGeneration"] == 1
            assert [(c["type"], c["status"]) for c in status["conditions"]] == [("Ready", "True")]
            # granted by name: through, without a restart (AssumeRole, then the VPC, which is
            # in moto's default account and not in X: VPCNotFound)
            change = {"spec": {"namespaces": {"names": ["grants-a", namespace]}}}
            patched = real.admin.patch(
                f"{GRANTS}/elsewhere", content=json.dumps(change), headers=MERGE
            )
            assert patched.status_code == 200, patched.text
            wait_for(
                lambda: (
                    (condition(real, "acct", namespace, "SubscriptionReady") or ("", ""))[1]
                    not in ("", "AccountNotGranted")
                ),
                45,
                "the FlowExport let through",
            )
            assert ("sts", "AssumeRole") in {(h.service, h.operation) for h in recorder.hits}
            wait_for(
                lambda: (
                    real.admin.get(f"{GRANTS}/elsewhere").json()["status"].get("flowExports") == 1
                ),
                30,
                "the grant's count",
            )
        finally:
            real.admin.delete(real.path("acct", namespace))
            real.admin.delete(f"{GRANTS}/elsewhere")
