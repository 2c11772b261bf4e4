"""Metrics: deltas between checkpoints, never negative, served over HTTP in Prometheus format;
the process, the interpreter and the build; timestamps that let the lag alert see a stall."""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from flowexport import __version__, lifecycle
from flowexport.api.conditions import ConditionType, ConditionUpdate
from flowexport.aws.kinesis_reader import ShardCursor
from flowexport.aws.reader import ReaderCursor
from flowexport.errors import Reason
from flowexport.kube import metrics
from flowexport.kube.reconcile import reconcile
from flowexport.kube.status_writer import StatusWriter
from flowexport.pipeline import Progress
from flowexport.sim.moto import free_port
from tests.chart import of_kind, render
from tests.kube.conftest import NS, World
from tests.kube.test_worker import eventually, running
from tests.promql import evaluate, scrape


def value(sample: str, /, **labels: str) -> float:
    found = metrics.REGISTRY.get_sample_value(sample, labels)
    return 0.0 if found is None else found


def progress(read: int, uploaded: int, skipped: dict[str, int], lag: int = 5) -> Progress:
    return Progress(
        ReaderCursor(1),
        records_read=read,
        flows_uploaded=uploaded,
        records_skipped=skipped,
        batches_uploaded=uploaded // 10,
        lag_seconds=lag,
    )


def test_counters_add_what_changed_between_checkpoints() -> None:
    ids = {"namespace": "m1", "name": "fe"}
    first = progress(100, 20, {"nodata": 3})
    metrics.count_progress("m1", "fe", None, first)
    second = progress(250, 30, {"nodata": 4, "bad_ip": 1}, lag=9)
    metrics.count_progress("m1", "fe", first, second)
    assert value("flowexport_records_read_total", **ids) == 250
    assert value("flowexport_flows_uploaded_total", **ids) == 30
    assert value("flowexport_batches_uploaded_total", **ids) == 3
    assert value("flowexport_records_skipped_total", reason="nodata", **ids) == 4
    assert value("flowexport_records_skipped_total", reason="bad_ip", **ids) == 1
    assert value("flowexport_lag_seconds", **ids) == 9


def test_a_restart_does_not_recount_the_stored_totals_and_rollbacks_do_not_uncount() -> None:
    ids = {"namespace": "m2", "name": "fe"}
    stored = progress(1000, 400, {})
    metrics.count_progress("m2", "fe", stored, progress(1010, 401, {}))
    assert value("flowexport_records_read_total", **ids) == 10
    metrics.count_progress("m2", "fe", progress(1010, 401, {}), progress(1005, 401, {}))
    assert value("flowexport_records_read_total", **ids) == 10


def test_errors_conditions_workers_and_the_endpoint() -> None:
    metrics.count_error("m3", "fe", "Ingesting", "PCEUnavailable")
    metrics.count_error("m3", "fe", "Ingesting", "PCEUnavailable")
    assert (
        value(
            "flowexport_errors_total",
            namespace="m3",
            name="fe",
            stage="Ingesting",
            reason="PCEUnavailable",
        )
        == 2
    )
    port = free_port()
    metrics.serve(port, "127.0.0.1")
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'flowexport_errors_total{name="fe",namespace="m3",reason="PCEUnavailable"' in text
    assert "flowexport_workers" in text


def test_a_deleted_flowexport_leaves_no_series() -> None:
    metrics.count_error("m4", "gone", "PCEReachable", "PCEUnauthorized")
    metrics.set_condition("m4", "gone", "Ready", False)
    metrics.count_progress("m4", "gone", None, progress(5, 1, {"nodata": 1}))
    metrics.forget("m4", "gone")
    text = metrics.generate_text().decode()
    assert 'namespace="m4"' not in text


def test_the_process_the_interpreter_and_the_build_are_exported() -> None:
    text = metrics.generate_text().decode()
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "python_info"):
        assert f"\n{name}" in text, name
    (build,) = [s for s in scrape(text) if s.label("__name__") == "flowexport_build_info"]
    assert build.value == 1
    assert build.label("version") == __version__
    assert build.label("python") == platform.python_version()
    assert build.label("revision")  # the image's FLOWEXPORT_REVISION, else "unknown"


def test_the_revision_comes_from_the_environment_the_image_sets() -> None:
    probe = "from flowexport.kube import metrics\nprint(metrics.generate_text().decode())"
    env = {**os.environ, metrics.REVISION_ENV: "0123abc"}
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert 'revision="0123abc"' in result.stdout


def test_progress_and_read_through_move_with_the_cursor_not_with_a_repeated_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(metrics, "clock", lambda: now[0])
    ids = {"namespace": "m5", "name": "fe"}
    first = Progress(ReaderCursor(900_000))
    metrics.count_progress("m5", "fe", None, first)
    assert value("flowexport_last_progress_timestamp_seconds", **ids) == 1000
    assert value("flowexport_read_through_timestamp_seconds", **ids) == 900
    now[0] = 1030.0
    polled = Progress(ReaderCursor(930_000))  # an idle poll: the cursor moved over nothing
    metrics.count_progress("m5", "fe", first, polled)
    assert value("flowexport_last_progress_timestamp_seconds", **ids) == 1030
    assert value("flowexport_read_through_timestamp_seconds", **ids) == 930
    now[0] = 1100.0
    metrics.count_progress("m5", "fe", polled, Progress(ReaderCursor(930_000)))  # a stop
    assert value("flowexport_last_progress_timestamp_seconds", **ids) == 1030
    # Mode stream: every shard checkpoint is a read; the log group no longer says how far.
    metrics.count_progress("m5", "fe", None, Progress(ShardCursor("shardId-0")))
    metrics.set_shard_lag("m5", "fe", "shardId-0", 2.0)
    assert value("flowexport_last_progress_timestamp_seconds", **ids) == 1100
    assert (
        metrics.REGISTRY.get_sample_value("flowexport_read_through_timestamp_seconds", ids) is None
    )
    metrics.forget("m5", "fe")


def test_suspended_is_ready_reconciling_and_stalled_all_false() -> None:
    ids = {"namespace": "m6", "name": "fe"}
    board = StatusWriter("m6", "fe", _no_write)
    stages = [
        ConditionUpdate(ConditionType.SUBSCRIPTION_READY, True, Reason.SUBSCRIBED, "ok"),
        ConditionUpdate(ConditionType.PCE_REACHABLE, True, Reason.REACHABLE, "ok"),
        ConditionUpdate(ConditionType.WORKLOADS_SYNCED, True, Reason.DISABLED, "off"),
    ]
    board.apply([*stages, lifecycle.suspended()], 1)
    assert value("flowexport_suspended", **ids) == 1
    assert value("flowexport_last_progress_timestamp_seconds", **ids) > 0  # its clock started
    board.apply([ConditionUpdate(ConditionType.INGESTING, False, Reason.PCE_UNAVAILABLE, "503")], 1)
    assert value("flowexport_suspended", **ids) == 0  # retrying: Reconciling
    board.apply(
        [ConditionUpdate(ConditionType.INGESTING, False, Reason.PCE_UNAUTHORIZED, "401")], 1
    )
    assert value("flowexport_suspended", **ids) == 0  # terminal: Stalled
    metrics.forget("m6", "fe")
    assert 'namespace="m6"' not in metrics.generate_text().decode()


async def _no_write(namespace: str, name: str, status: dict[str, Any]) -> None:
    return None


def lag_alert() -> str:
    """FlowExportLagHigh's expression as the chart renders it (lagSeconds 60)."""
    values = {"metrics": {"prometheusRule": {"enabled": True, "lagSeconds": LAG_SECONDS}}}
    (rule,) = of_kind(render(values), "PrometheusRule")
    (alert,) = [r for r in rule["spec"]["groups"][0]["rules"] if r["alert"] == "FlowExportLagHigh"]
    expr: str = alert["expr"]
    return expr


LAG_SECONDS = 60


def firing(expr: str, text: str, at: float) -> set[tuple[str, str]]:
    """The (namespace, name) the expression returns over one scrape, evaluated at `at`."""
    return {(s.label("namespace"), s.label("name")) for s in evaluate(expr, scrape(text), at)}


async def test_a_stalled_worker_turns_the_lag_alert_true(world: World) -> None:
    """A real worker (moto, the PCE simulator) ingests, then the PCE answers every upload
    with 503: the pipeline retries and checkpoints nothing. The scrapes show the two
    timestamps moving while it is healthy and standing still while it is stalled; the alert's
    expression (from the rendered chart, evaluated by tests/promql.py over those scrapes) is
    false for the healthy scrape at its own time and true for the stalled one once `time()`
    is lagSeconds later. Time is advanced in the evaluation rather than waited for: a stalled
    scrape taken then would carry the same values, which is what the two stalled scrapes show.
    """
    expr, me = lag_alert(), (NS, "prod")
    body = world.body()
    export = world.export()
    await reconcile(world.op, export, body)
    async with running(world, export, body):
        await eventually(lambda: world.condition("Ready") == ("True", "Ready"), "Ready")
        world.write_flows(5)
        await eventually(lambda: len(world.received()) == 5, "5 flows at the PCE")
        healthy, healthy_at = metrics.generate_text().decode(), time.time()
        await asyncio.sleep(2.5)  # pollIntervalSeconds is 1: the cursor moves every poll
        later = metrics.generate_text().decode()
        assert moving(healthy, later) == {"last_progress", "read_through"}
        assert me not in firing(expr, healthy, healthy_at)

        world.pce.faults(fail_first=10**6, fail_status=503, path_contains="bulk_traffic_flows")
        world.write_flows(5, start=100)
        await eventually(lambda: refused(world) >= 1, "an upload refused")
        stalled = metrics.generate_text().decode()
        await asyncio.sleep(2.5)
        stalled_later, stalled_at = metrics.generate_text().decode(), time.time()
        assert moving(stalled, stalled_later) == set()
        assert me not in firing(expr, stalled_later, stalled_at)
        assert me in firing(expr, stalled_later, stalled_at + LAG_SECONDS + 1)
        # Each side of the stall sees it alone: the oldest unread record and the progress clock.
        read_through = (
            "time() - max by (namespace, name) (flowexport_read_through_timestamp_seconds)"
        )
        progress = "time() - max by (namespace, name) (flowexport_last_progress_timestamp_seconds)"
        for side in (read_through, progress):
            assert me in firing(f"{side} > {LAG_SECONDS}", stalled_later, stalled_at + 61)

        # Suspended, it stands still on purpose: no alert however long.
        body["spec"]["suspend"] = True
        body["metadata"]["generation"] = 2
        await reconcile(world.op, export, body)
        await eventually(lambda: world.condition("Ready") == ("False", "Suspended"), "suspended")
        suspended = metrics.generate_text().decode()
        assert me not in firing(expr, suspended, time.time() + 10 * LAG_SECONDS)


def refused(world: World) -> int:
    return sum(1 for r in world.pce.requests() if r["status"] == 503 and "bulk" in str(r["path"]))


def moving(before: str, after: str) -> set[str]:
    """Which of security/prod's two progress timestamps differ between two scrapes."""
    names = {
        "last_progress": "flowexport_last_progress_timestamp_seconds",
        "read_through": "flowexport_read_through_timestamp_seconds",
    }

    def of(text: str, metric: str) -> float | None:
        found = [
            s.value
            for s in scrape(text)
            if s.label("__name__") == metric
            and (s.label("namespace"), s.label("name")) == (NS, "prod")
        ]
        assert found, f"{metric} missing"
        return found[0]

    return {short for short, metric in names.items() if of(before, metric) != of(after, metric)}
