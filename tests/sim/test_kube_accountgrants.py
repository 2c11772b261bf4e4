"""The simulator serves the cluster-scoped AccountGrant CRD as the API server does: discovery,
create/get/list without a namespace, a namespaced path refused, CEL and pattern validation,
the status subresource, and a watch's events."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from flowexport.api.crd import ACCOUNTGRANT_CRD, build_crd
from flowexport.sim.kube import KubeSimulator
from flowexport.sim.serve import ServerThread

GRANTS = "/apis/flowexport.io/v1alpha1/accountgrants"
MERGE = {"Content-Type": "application/merge-patch+json"}
ROLE = "arn:aws:iam::210987654321:role/flowexport-member"


@pytest.fixture
def api() -> Iterator[httpx.Client]:
    sim = KubeSimulator(history=50)
    with ServerThread(sim.app) as url, httpx.Client(base_url=url, timeout=30) as client:
        made = client.post(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            json=build_crd(ACCOUNTGRANT_CRD),
        )
        assert made.status_code == 201, made.text
        yield client


def grant(name: str = "payments", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "flowexport.io/v1alpha1",
        "kind": "AccountGrant",
        "metadata": {"name": name},
        "spec": {
            "accountId": "210987654321",
            "roleArn": ROLE,
            "externalId": "fx-cluster-1",
            "namespaces": {"names": ["payments"]},
            **spec,
        },
    }


def test_discovery_says_cluster_scope(api: httpx.Client) -> None:
    resources = {r["name"]: r for r in api.get("/apis/flowexport.io/v1alpha1").json()["resources"]}
    assert resources["accountgrants"]["namespaced"] is False
    assert resources["accountgrants"]["shortNames"] == ["fxgrant"]
    assert "accountgrants/status" in resources


def test_create_get_list_and_status_without_a_namespace(api: httpx.Client) -> None:
    made = api.post(GRANTS, json=grant())
    assert made.status_code == 201, made.text
    assert "namespace" not in made.json()["metadata"]
    assert api.get(f"{GRANTS}/payments").json()["spec"]["accountId"] == "210987654321"
    assert [i["metadata"]["name"] for i in api.get(GRANTS).json()["items"]] == ["payments"]
    # a namespaced path is not served for a cluster-scoped kind
    namespaced = "/apis/flowexport.io/v1alpha1/namespaces/default/accountgrants"
    assert api.post(namespaced, json=grant("other")).status_code == 404
    status = {"status": {"observedGeneration": 1, "flowExports": 2}}
    patched = api.patch(f"{GRANTS}/payments/status", content=json.dumps(status), headers=MERGE)
    assert patched.status_code == 200, patched.text
    assert patched.json()["status"]["flowExports"] == 2
    # the main resource ignores status; the status subresource ignores spec
    spec_via_status = {"spec": {"accountId": "111111111111"}, "status": {"flowExports": 3}}
    api.patch(f"{GRANTS}/payments/status", content=json.dumps(spec_via_status), headers=MERGE)
    got = api.get(f"{GRANTS}/payments").json()
    assert got["spec"]["accountId"] == "210987654321" and got["status"]["flowExports"] == 3
    assert got["metadata"]["generation"] == 1


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"roleArn": "arn:aws:iam::123456789012:role/flowexport-member"}, "accountId's account"),
        ({"accountId": "12345"}, "spec.accountId"),
        ({"namespaces": {}}, "name namespaces, or give a selector"),
        ({"externalId": "has space"}, "spec.externalId"),
        ({"regions": ["Mars-1"]}, "spec.regions"),
    ],
)
def test_invalid_grants_are_refused_at_admission(
    api: httpx.Client, spec: dict[str, Any], says: str
) -> None:
    answer = api.post(GRANTS, json=grant(**spec))
    assert answer.status_code == 422, answer.text
    assert says in answer.text


def test_a_watch_sees_grants_come_change_and_go(api: httpx.Client) -> None:
    version = api.get(GRANTS).json()["metadata"]["resourceVersion"]
    seen: list[tuple[str, str]] = []
    done = threading.Event()

    def watch() -> None:
        params = {"watch": "true", "resourceVersion": version, "timeoutSeconds": "20"}
        with api.stream("GET", GRANTS, params=params) as stream:
            for line in stream.iter_lines():
                if line:
                    event = json.loads(line)
                    seen.append((event["type"], event["object"]["metadata"]["name"]))
                    if event["type"] == "DELETED":
                        break
        done.set()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    assert api.post(GRANTS, json=grant()).status_code == 201
    change = {"spec": {"namespaces": {"names": ["payments", "audit"]}}}
    assert api.patch(f"{GRANTS}/payments", content=json.dumps(change), headers=MERGE).is_success
    assert api.delete(f"{GRANTS}/payments").is_success
    assert done.wait(25)
    assert seen == [("ADDED", "payments"), ("MODIFIED", "payments"), ("DELETED", "payments")]
