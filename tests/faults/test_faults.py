"""The fault suite: the real operator (a process) against moto, the PCE simulator and the
Kubernetes simulator, under faults. Each scenario asserts: no record lost, duplicates within
the bound (the batch in flight per kill), the worker alive, and conditions that explain.

Soak variants (many more kills) are behind the `soak` marker: `pytest -m soak tests/faults`.
Figures from these runs are recorded in bench/RESULTS.md.
"""

from __future__ import annotations

import random
import time

import pytest

from tests.e2e.conftest import FE, MERGE, Stack, eventually
from tests.faults.conftest import Traffic, liveness_ms, sigkill
from tests.flowlines import put_connections

#: The e2e FlowExport's batch size (see Stack.flowexport): at most this many flows are in one
#: request, so a kill repeats at most this many.
BATCH = 10


def delivered(stack: Stack) -> tuple[set[str], int]:
    """The client addresses at the PCE, and how many flows arrived more than once."""
    flows = stack.received()
    return {f[0] for f in flows}, len(flows) - len(set(flows))


def ready(stack: Stack) -> None:
    eventually(lambda: stack.condition("prod", "Ready") == ("True", "Ready"), what="Ready")


def all_delivered(stack: Stack, traffic: Traffic, timeout: float = 90) -> float:
    """Wait until every connection written is at the PCE; returns how long it took."""
    started = time.monotonic()
    expected = traffic.expected()
    eventually(lambda: delivered(stack)[0] >= expected, timeout=timeout, what="every record")
    assert delivered(stack)[0] == expected
    return time.monotonic() - started


def test_a_pce_outage_across_an_operator_restart_loses_nothing(stack: Stack) -> None:
    pce = stack.loop.pce
    stack.apply(stack.flowexport())
    ready(stack)
    pce.sim.set_faults(fail_first=10_000, fail_status=503)
    put_connections(stack.aws("logs"), "/flowexport/prod", 30)
    eventually(
        lambda: stack.condition("prod", "Ingesting") == ("False", "PCEUnavailable"),
        what="the outage explained",
    )
    assert stack.condition("prod", "Ready") == ("False", "PCEUnavailable")
    assert stack.operator.stop() == 0
    stack.operator.start()
    eventually(
        lambda: stack.condition("prod", "PCEReachable") == ("False", "PCEUnavailable"),
        what="still down after the restart",
    )
    pce.sim.set_faults()
    eventually(lambda: len(delivered(stack)[0]) == 30, timeout=90, what="30 flows")
    assert delivered(stack)[1] == 0, "nothing was accepted during the outage, so no repeats"
    ready(stack)
    assert stack.operator.metric("flowexport_workers") == 1


def test_a_429_storm_is_survived_with_nothing_lost(stack: Stack) -> None:
    stack.apply(stack.flowexport())
    ready(stack)
    stack.loop.pce.sim.set_faults(throttle_first=12, retry_after=0.2)
    put_connections(stack.aws("logs"), "/flowexport/prod", 40)
    eventually(lambda: len(delivered(stack)[0]) == 40, timeout=90, what="40 flows")
    assert delivered(stack)[1] == 0
    ready(stack)


def test_sigterm_ends_the_operator_within_10_s_while_the_pce_hangs(stack: Stack) -> None:
    pce = stack.loop.pce
    stack.apply(stack.flowexport())
    ready(stack)
    pce.sim.set_faults(delay_seconds=120, path_contains="bulk_traffic_flows")
    put_connections(stack.aws("logs"), "/flowexport/prod", 5)
    eventually(
        lambda: any("bulk_traffic_flows" in r["path"] for r in pce.sim.state.requests),
        what="an upload in flight",
    )
    slowest = max(liveness_ms(stack) for _ in range(5))
    assert slowest < 1000, f"liveness took {slowest:.0f} ms while the PCE hung"
    started = time.monotonic()
    assert stack.operator.stop() == 0
    took = time.monotonic() - started
    assert took < 10, f"the operator took {took:.1f}s to stop"
    pce.sim.set_faults()
    stack.operator.start()
    eventually(lambda: len(delivered(stack)[0]) == 5, what="the 5 flows after the restart")
    assert delivered(stack)[1] <= BATCH


def _kills(stack: Stack, traffic: Traffic, sigkills: int, sigterms: int, seed: int) -> None:
    stack.apply(stack.flowexport())
    ready(stack)
    traffic.start()
    chance = random.Random(seed)
    plan = ["KILL"] * sigkills + ["TERM"] * sigterms
    chance.shuffle(plan)
    for signal_name in plan:
        time.sleep(chance.uniform(0.5, 3.0))
        if signal_name == "KILL":
            sigkill(stack)
        else:
            assert stack.operator.stop() == 0
        stack.operator.start()
    traffic.stop()
    took = all_delivered(stack, traffic)
    repeats = delivered(stack)[1]
    print(
        f"kills: {sigkills} SIGKILL + {sigterms} SIGTERM; connections {traffic.written}; "
        f"repeated flows {repeats}; caught up {took:.1f}s after the writer stopped"
    )
    assert repeats <= sigkills * BATCH, "more repeats than the batches in flight"
    ready(stack)


def test_sigkills_and_sigterms_at_random_points_lose_nothing(
    stack: Stack, traffic: Traffic
) -> None:
    _kills(stack, traffic, sigkills=3, sigterms=2, seed=11)


@pytest.mark.soak
def test_soak_20_sigkills_and_5_sigterms(stack: Stack, traffic: Traffic) -> None:
    _kills(stack, traffic, sigkills=20, sigterms=5, seed=29)


def test_a_spec_edit_while_ingesting_keeps_the_cursor(stack: Stack, traffic: Traffic) -> None:
    stack.apply(stack.flowexport())
    ready(stack)
    traffic.start()
    time.sleep(2)
    patch = {"spec": {"ingestion": {"batchSize": 7}}}
    assert stack.kube.patch(f"{FE}/prod", json=patch, headers=MERGE).status_code == 200
    eventually(lambda: stack.get()["status"].get("observedGeneration") == 2, what="gen 2")
    time.sleep(2)
    traffic.stop()
    all_delivered(stack, traffic)
    assert delivered(stack)[1] == 0, "a clean worker restart repeats nothing"


def test_log_group_and_flow_log_deleted_under_a_running_worker(stack: Stack) -> None:
    stack.apply(stack.flowexport())
    ready(stack)
    first = stack.get()["status"]["flowLogId"]
    stack.aws("ec2").delete_flow_logs(FlowLogIds=[first])
    stack.aws("logs").delete_log_group(logGroupName="/flowexport/prod")
    eventually(
        lambda: stack.condition("prod", "Ingesting") == ("False", "LogGroupNotFound"),
        what="the loss explained",
    )

    def repaired() -> bool:
        logs = stack.aws("ec2").describe_flow_logs()["FlowLogs"]
        return len(logs) == 1 and stack.get()["status"]["flowLogId"] == logs[0]["FlowLogId"]

    eventually(repaired, timeout=60, what="the flow log and log group recreated")
    ready(stack)
    put_connections(stack.aws("logs"), "/flowexport/prod", 6)
    eventually(lambda: len(delivered(stack)[0]) == 6, what="flows after the repair")


HOSTILE = [
    "",  # empty
    "2 123 eni-1 ٤٤٣.0.0.1 10.0.0.2 ٤٤٣ 443 6 1 40 1 2 ACCEPT OK",  # Unicode digits
    "garbage " * 40,
    "x" * 20_000,  # longer than any record (CloudWatch takes up to 256 KB)
    "\x00\x01\x02 binary",
    "2 123 eni-1 10.0.0.1 10.0.0.2 4_43 443 6 1 40 1 2 ACCEPT OK",
    "2 123 eni-1 10.0.0.1 10.0.0.2 40000 443 6 1 40 1 2 ACCEPT",  # a field short
    "2 123 eni-1 10.0.0.1 10.0.0.2 40000 99999 6 1 40 1 2 ACCEPT OK",  # port out of range
]


def test_100k_hostile_lines_through_the_operator(stack: Stack) -> None:
    stack.apply(stack.flowexport(**{"ingestion.lookbackSeconds": 3600}))
    ready(stack)
    logs = stack.aws("logs")
    logs.create_log_stream(logGroupName="/flowexport/prod", logStreamName="hostile")

    def put(events: list[dict[str, object]]) -> None:
        logs.put_log_events(
            logGroupName="/flowexport/prod", logStreamName="hostile", logEvents=events
        )

    now = int(time.time() * 1000)
    sent = 0
    batch: list[dict[str, object]] = []
    size = 0
    for i in range(100_000):
        message = HOSTILE[i % len(HOSTILE)] or " "
        if size + len(message) + 26 > 900_000 or len(batch) == 10_000:
            logs.put_log_events(
                logGroupName="/flowexport/prod", logStreamName="hostile", logEvents=batch
            )
            batch, size = [], 0
        batch.append({"timestamp": now, "message": message})
        size += len(message) + 26
        sent += 1
    put(batch)
    put_connections(logs, "/flowexport/prod", 20)
    eventually(lambda: len(delivered(stack)[0]) == 20, timeout=120, what="the 20 good flows")
    counts = eventually(
        lambda: (
            (c := stack.get()["status"].get("counts", {})).get("recordsRead", 0) >= sent + 20 and c
        ),
        timeout=60,
        what="every record counted",
    )
    skipped = counts["recordsSkipped"]
    assert sum(skipped.values()) >= sent
    assert stack.operator.metric("flowexport_workers") == 1
    ready(stack)
