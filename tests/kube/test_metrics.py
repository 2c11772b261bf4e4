"""Metrics: deltas between checkpoints, never negative, served over HTTP in Prometheus format."""

from __future__ import annotations

import httpx

from flowexport.aws.reader import ReaderCursor
from flowexport.kube import metrics
from flowexport.pipeline import Progress
from flowexport.sim.moto import free_port


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
