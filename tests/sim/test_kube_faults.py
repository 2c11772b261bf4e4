"""Faults injected by the Kubernetes API simulator: errors as Status objects, hangs, dropped
connections, matched by method, path and user agent, set from Python or over HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from flowexport.sim.kube import KubeFault, KubeSimulator
from flowexport.sim.kube.faults import rules_json
from flowexport.sim.serve import ServerThread

NS_PATH = "/api/v1/namespaces"


@pytest.fixture
def served() -> Iterator[tuple[KubeSimulator, httpx.Client]]:
    sim = KubeSimulator()
    server = ServerThread(sim.app)
    url = server.start()
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            yield sim, client
    finally:
        server.stop()


def test_an_error_rule_answers_a_status_object_for_its_requests_only(
    served: tuple[KubeSimulator, httpx.Client],
) -> None:
    sim, client = served
    sim.faults.set([KubeFault(method="POST", path_contains="namespaces", status=409, remaining=2)])
    for _ in range(2):
        answer = client.post(NS_PATH, json={"metadata": {"name": "a"}})
        assert answer.status_code == 409
        body = answer.json()
        assert (body["kind"], body["reason"], body["code"]) == ("Status", "Conflict", 409)
        assert "the object has been modified" in body["message"]
    assert client.get(NS_PATH).status_code == 200  # another method
    assert client.post(NS_PATH, json={"metadata": {"name": "a"}}).status_code == 201  # used up
    assert [h.injected for h in sim.faults.hits] == [True, True, False, False]
    assert sim.faults.rules[0].remaining == 0


def test_user_agents_select_whose_calls_fail(served: tuple[KubeSimulator, httpx.Client]) -> None:
    sim, client = served
    sim.faults.set([KubeFault(user_agent_contains="OpenAPI-Generator", status=500)])
    assert client.get(NS_PATH).status_code == 200
    answer = client.get(NS_PATH, headers={"User-Agent": "OpenAPI-Generator/37.0.3/python"})
    assert (answer.status_code, answer.json()["reason"]) == (500, "InternalError")


def test_a_delay_hangs_then_lets_through_and_a_drop_cuts_the_connection(
    served: tuple[KubeSimulator, httpx.Client],
) -> None:
    sim, client = served
    sim.faults.set([KubeFault(status=0, delay_seconds=0.5, remaining=1)])
    started = time.monotonic()
    assert client.get(NS_PATH).status_code == 200
    assert time.monotonic() - started >= 0.5
    sim.faults.set([KubeFault(drop=True, remaining=1)])
    with pytest.raises(httpx.TransportError):
        client.get(NS_PATH)
    assert client.get(NS_PATH).status_code == 200


def test_faults_are_set_read_and_cleared_over_http(
    served: tuple[KubeSimulator, httpx.Client],
) -> None:
    sim, client = served
    rules = [KubeFault(method="PATCH", path_contains="/status", status=503, remaining=1)]
    assert client.post("/_faults", json=rules_json(rules)).json() == {"rules": 1}
    assert client.post("/_faults", json=[{"status": 700}]).status_code == 400
    assert client.post("/_faults", json=[{"nonsense": 1}]).status_code == 400
    shown = client.get("/_faults").json()
    assert shown["rules"][0]["status"] == 503 and shown["hits"] == []
    assert client.delete("/_faults").status_code == 204
    assert client.get("/_faults").json() == {"rules": [], "hits": []}
    assert sim.faults.rules == []
