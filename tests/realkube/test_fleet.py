"""The FlowExportSet CRD on kube-apiserver 1.37 and on the simulator: it is Established (its
CEL rules compile within the real server's cost budget), both examples are admitted, and an
invalid set is refused by both, naming the same field."""

from __future__ import annotations

import copy
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from flowexport.api.crd import FLOWEXPORTSET_CRD, build_crd
from flowexport.sim.kube import KubeSimulator
from flowexport.sim.serve import ServerThread
from tests.realkube.conftest import CRD_PATH, FE_API

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fleet" / "flowexportset.yaml"


@pytest.fixture(scope="module")
def simulator() -> Iterator[httpx.Client]:
    server = ServerThread(KubeSimulator().app)
    url = server.start()
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.post(CRD_PATH, json=build_crd(FLOWEXPORTSET_CRD)).status_code == 201
            yield client
    finally:
        server.stop()


def examples() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]


def create(client: httpx.Client, namespace: str, body: dict[str, Any]) -> httpx.Response:
    body = copy.deepcopy(body)
    body["metadata"] = {"name": f"set-{secrets.token_hex(3)}", "namespace": namespace}
    return client.post(f"{FE_API}/namespaces/{namespace}/flowexportsets", json=body)


def test_the_set_crd_is_served_and_admits_the_examples_as_the_simulator_does(
    admin: httpx.Client, crd: dict[str, Any], namespace: str, simulator: httpx.Client
) -> None:
    found = admin.get(f"{CRD_PATH}/{FLOWEXPORTSET_CRD.name}").json()
    conditions = {c["type"]: c["status"] for c in found["status"]["conditions"]}
    assert conditions["Established"] == "True"
    assert simulator.post("/api/v1/namespaces", json={"metadata": {"name": namespace}}).is_success
    for example in examples():
        for client in (admin, simulator):
            answer = create(client, namespace, example)
            assert answer.status_code == 201, answer.text
            stored = answer.json()
            assert set(stored["spec"]["destination"]) == set(example["spec"]["destination"])
            assert stored["spec"]["refreshSeconds"] == example["spec"].get("refreshSeconds", 300)
    bad = copy.deepcopy(examples()[0])
    bad["spec"]["destination"]["s3"] = {"bucket": "central-logs"}
    causes = []
    for client in (admin, simulator):
        answer = create(client, namespace, bad)
        assert answer.status_code == 422, answer.text
        causes.append(
            sorted(
                (c.get("field"), "exactly one of s3 and logGroups" in c.get("message", ""))
                for c in answer.json()["details"]["causes"]
            )
        )
    assert causes[0] == causes[1] and any(ok for _, ok in causes[0])
