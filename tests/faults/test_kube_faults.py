"""The Kubernetes API misbehaving under the running operator (issue 23, items 3, 10 and 11):
status writes refused (409, 500), an API server gone for a few seconds, one that hangs at a
SIGTERM, and a status wiped by hand, with the operator running and while it is stopped.

Faults are injected by the Kubernetes simulator itself (`KubeSimulator.faults`), into the
operator's own calls (user agent `OpenAPI-Generator`: status, Secrets) or kopf's (`kopf/`).
Each scenario asserts what the user sees (conditions, Events, `kubectl wait`) and what reached
the PCE: nothing lost, nothing repeated without a kill.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowexport.sim.kube import KubeFault
from tests.e2e.conftest import FE, NS, Stack, eventually
from tests.faults.conftest import Traffic
from tests.faults.test_faults import all_delivered, delivered, ready
from tests.flowlines import put_connections

KUBECTL = Path(sys.executable).with_name("kubectl")
#: The operator's own Kubernetes calls (the official client) and kopf's.
CLIENT, KOPF = "OpenAPI-Generator", "kopf/"
STATUS_PATCH = {"method": "PATCH", "path_contains": "/status", "user_agent_contains": CLIENT}


def kubectl(stack: Stack, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(stack.loop.kubeconfig), "-n", NS, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Conditions:
    """Every (type, status, reason, message) the FlowExport's conditions showed, polled from
    another thread every 0.1 s while the block runs."""

    def __init__(self, stack: Stack) -> None:
        self.url = f"{stack.loop.kube_url}{FE}/prod"
        self.seen: set[tuple[str, str, str, str]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                status = client.get(self.url).json().get("status") or {}
                for c in status.get("conditions") or []:
                    self.seen.add((c["type"], c["status"], c["reason"], c.get("message", "")))
                time.sleep(0.1)

    def __enter__(self) -> Conditions:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def not_ready(self) -> set[tuple[str, str, str, str]]:
        return {c for c in self.seen if c[0] == "Ready" and c[1] != "True"}


def uploaded_in_status(stack: Stack) -> int:
    return int((stack.get()["status"].get("counts") or {}).get("flowsUploaded") or 0)


# -- item 10: a few failed status writes -----------------------------------------------------


@pytest.mark.timeout(240)
def test_conflicts_and_500s_on_checkpoints_neither_stall_nor_repeat(stack: Stack) -> None:
    stack.apply(stack.flowexport())
    ready(stack)
    logs = stack.aws("logs")
    put_connections(logs, "/flowexport/prod", 10)
    eventually(lambda: len(delivered(stack)[0]) == 10, what="10 flows")
    eventually(lambda: uploaded_in_status(stack) == 10, what="their checkpoint")
    written = 10
    with Conditions(stack) as seen:
        for status, times in ((409, 2), (500, 3), (409, 1)):
            stack.sim.faults.set([KubeFault(**STATUS_PATCH, status=status, remaining=times)])
            started = time.monotonic()
            put_connections(logs, "/flowexport/prod", 10, written)
            written += 10
            eventually(
                lambda n=written: len(delivered(stack)[0]) == n,
                timeout=60,
                what=f"flows through {times} x {status}",
            )
            took = time.monotonic() - started
            print(f"{times} x {status} on status writes: 10 flows at the PCE in {took:.1f}s")
            assert took < 8, f"{times} x {status} on status writes stalled uploads {took:.1f}s"
            eventually(lambda n=written: uploaded_in_status(stack) == n, what="the checkpoint")
            injected = [h for h in stack.sim.faults.hits if h.injected]
            assert len(injected) == times, "the faults were not all hit"
            stack.sim.faults.clear()
    assert delivered(stack)[1] == 0, "a refused checkpoint write repeated flows"
    assert seen.not_ready() == set(), f"Ready left True: {seen.not_ready()}"
    assert stack.operator.metric("flowexport_workers") == 1
    assert "will try again" not in stack.operator.tail(400), "the ingest daemon ended"


@pytest.mark.timeout(240)
def test_a_5_s_api_server_outage_costs_at_most_its_length(stack: Stack) -> None:
    traffic = Traffic(stack, fresh=5, repeats=1, tick=0.5)
    stack.apply(stack.flowexport())
    ready(stack)
    traffic.start()
    try:
        eventually(lambda: len(delivered(stack)[0]) >= 20, what="traffic flowing")
        # Every call of the operator and of kopf: connections dropped, as by a restart.
        stack.sim.faults.set(
            [
                KubeFault(user_agent_contains=CLIENT, drop=True),
                KubeFault(user_agent_contains=KOPF, drop=True),
            ]
        )
        time.sleep(5)
        stack.sim.faults.clear()
        cleared = time.monotonic()
        expected = traffic.expected()
        eventually(lambda: delivered(stack)[0] >= expected, timeout=60, what="what was written")
        behind = time.monotonic() - cleared
    finally:
        traffic.stop()
    all_delivered(stack, traffic)
    print(f"5 s outage: caught up {behind:.1f}s after it; {traffic.written} connections")
    assert behind < 6, f"flows written before the outage ended arrived {behind:.1f}s after it"
    assert delivered(stack)[1] == 0, "the outage repeated flows"
    eventually(lambda: uploaded_in_status(stack) == len(traffic.expected()), what="checkpoint")
    ready(stack)
    assert "will try again" not in stack.operator.tail(400), "the ingest daemon ended"


# -- item 11: SIGTERM while the API server hangs ---------------------------------------------


@pytest.mark.timeout(180)
def test_sigterm_ends_the_operator_within_10_s_while_the_api_server_hangs(stack: Stack) -> None:
    stack.apply(stack.flowexport())
    ready(stack)
    # Every request hangs for two minutes: status writes, Events, kopf's patches.
    stack.sim.faults.set(
        [
            KubeFault(user_agent_contains=CLIENT, status=0, delay_seconds=120),
            KubeFault(user_agent_contains=KOPF, status=0, delay_seconds=120),
        ]
    )
    put_connections(stack.aws("logs"), "/flowexport/prod", 10)
    eventually(
        lambda: any(h.injected and h.path.endswith("/status") for h in stack.sim.faults.hits),
        what="a status write hanging",
    )
    started = time.monotonic()
    code = stack.operator.stop()
    took = time.monotonic() - started
    print(f"SIGTERM with the API server hanging: exit {code} after {took:.1f}s")
    assert took < 10, f"the operator took {took:.1f}s to stop (exit {code})"
    assert code == 0
    stack.sim.faults.clear()
    stack.operator.start()
    put_connections(stack.aws("logs"), "/flowexport/prod", 10, 10)
    eventually(lambda: len(delivered(stack)[0]) == 20, what="flows after the restart")
    # The checkpoint the API server never took: that one upload repeats, and none after it
    # (the 10 records are read in two chunks of half a batch: two uploads of 5).
    print(f"repeated after the restart: {delivered(stack)[1]}")
    assert delivered(stack)[1] <= 5
    ready(stack)


# -- item 3: status wiped --------------------------------------------------------------------


def wipe_status(stack: Stack) -> None:
    wiped = kubectl(
        stack,
        "patch",
        "flowexport",
        "prod",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":null}',
    )
    assert wiped.returncode == 0, wiped.stderr
    assert not stack.get().get("status"), "the status was not wiped"


@pytest.mark.timeout(180)
def test_a_status_wiped_while_running_comes_back_whole(stack: Stack) -> None:
    stack.apply(stack.flowexport())
    ready(stack)
    put_connections(stack.aws("logs"), "/flowexport/prod", 10)
    eventually(lambda: uploaded_in_status(stack) == 10, what="10 flows checkpointed")
    before = stack.get()["status"]
    wipe_status(stack)
    waited = kubectl(stack, "wait", "--for=condition=Ready", "fe/prod", "--timeout=30s", timeout=45)
    assert waited.returncode == 0, f"kubectl wait: {waited.stderr}"
    status = eventually(
        lambda: (s := stack.get().get("status") or {}).get("cursor") and s, what="the cursor"
    )
    assert status["observedGeneration"] == before["observedGeneration"]
    assert status["flowLogId"] == before["flowLogId"]
    assert status["counts"]["flowsUploaded"] == 10
    assert status["cursor"]["ingestedThrough"] >= before["cursor"]["ingestedThrough"]
    assert {c["type"] for c in status["conditions"]} == {c["type"] for c in before["conditions"]}
    put_connections(stack.aws("logs"), "/flowexport/prod", 10, 10)
    eventually(lambda: len(delivered(stack)[0]) == 20, what="flows after the wipe")
    assert delivered(stack)[1] == 0


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def events_of(stack: Stack, reason: str) -> list[dict[str, Any]]:
    return [e for e in stack.events() if e["reason"] == reason]


@pytest.mark.timeout(240)
def test_a_status_wiped_while_stopped_asks_where_to_resume(stack: Stack) -> None:
    logs = stack.aws("logs")
    stack.apply(stack.flowexport())  # startFrom: earliest
    ready(stack)
    put_connections(logs, "/flowexport/prod", 10)
    eventually(lambda: uploaded_in_status(stack) == 10, what="10 flows checkpointed")
    assert stack.operator.stop() == 0
    wipe_status(stack)
    time.sleep(1.5)
    between = time.time()
    time.sleep(1.5)
    put_connections(logs, "/flowexport/prod", 10, 10)  # written while the operator was down
    stack.operator.start()
    eventually(
        lambda: stack.condition("prod", "Ready") == ("False", "CursorLost"),
        what="the lost cursor said",
    )
    assert stack.condition("prod", "Ingesting") == ("False", "CursorLost")
    assert stack.condition("prod", "Stalled") == ("True", "CursorLost")
    lost = eventually(lambda: events_of(stack, "CursorLost"), what="a CursorLost Event")
    assert {e["type"] for e in lost} == {"Warning"}
    assert all("flowexport.io/resume-from" in e["message"] for e in lost)
    time.sleep(4)
    assert len(delivered(stack)[0]) == 10, "ingestion went on without a cursor"
    assert delivered(stack)[1] == 0, "startFrom earliest re-uploaded the log group"
    # An unusable value is said, and changes nothing.
    patch = {"metadata": {"annotations": {"flowexport.io/resume-from": "yesterday"}}}
    merge = {"Content-Type": "application/merge-patch+json"}
    assert stack.kube.patch(f"{FE}/prod", json=patch, headers=merge).status_code == 200
    eventually(lambda: events_of(stack, "ResumeFromInvalid"), timeout=30, what="refused")
    assert stack.condition("prod", "Ready") == ("False", "CursorLost")
    # The user's choice: records ingested after `between`.
    patch = {"metadata": {"annotations": {"flowexport.io/resume-from": rfc3339(between)}}}
    assert stack.kube.patch(f"{FE}/prod", json=patch, headers=merge).status_code == 200
    eventually(lambda: len(delivered(stack)[0]) == 20, timeout=60, what="the 10 written meanwhile")
    assert delivered(stack)[1] == 0
    ready(stack)
    (resumed,) = events_of(stack, "CursorRestored")
    assert rfc3339(between) in resumed["message"]
    annotations = stack.get()["metadata"].get("annotations") or {}
    assert "flowexport.io/resume-from" not in annotations, "the annotation was not consumed"
    # Resumed for good: a restart reads on from the new cursor.
    assert stack.operator.stop() == 0
    put_connections(logs, "/flowexport/prod", 5, 20)
    stack.operator.start()
    eventually(lambda: len(delivered(stack)[0]) == 25, what="5 more after a restart")
    assert delivered(stack)[1] == 0
    assert json.dumps(stack.get()["status"]).count("CursorLost") == 0
