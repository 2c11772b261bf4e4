"""Prometheus metrics of the operator, per FlowExport (labels `namespace`, `name`).

Counters count what this process did (they start at zero with the process, as Prometheus
expects); the totals since the FlowExport was created are in its status.
"""

from __future__ import annotations

import contextlib

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

from flowexport.pipeline import Progress

REGISTRY = CollectorRegistry(auto_describe=True)
_LABELS = ("namespace", "name")

RECORDS_READ = Counter(
    "flowexport_records_read",
    "Flow-log records read from CloudWatch Logs.",
    _LABELS,
    registry=REGISTRY,
)
RECORDS_SKIPPED = Counter(
    "flowexport_records_skipped",
    "Records that made no flow, by reason.",
    (*_LABELS, "reason"),
    registry=REGISTRY,
)
FLOWS_UPLOADED = Counter(
    "flowexport_flows_uploaded", "Flows the PCE accepted.", _LABELS, registry=REGISTRY
)
FLOWS_REJECTED = Counter(
    "flowexport_flows_rejected", "Flows the PCE rejected (bad lines).", _LABELS, registry=REGISTRY
)
BATCHES = Counter(
    "flowexport_batches_uploaded",
    "bulk_traffic_flows requests that succeeded.",
    _LABELS,
    registry=REGISTRY,
)
UPLOAD_SECONDS = Histogram(
    "flowexport_upload_duration_seconds",
    "Time to upload one flush (retries included).",
    _LABELS,
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
ERRORS = Counter(
    "flowexport_errors",
    "Failures by where they came from and their reason.",
    (*_LABELS, "stage", "reason"),
    registry=REGISTRY,
)
LAG = Gauge(
    "flowexport_lag_seconds",
    "Age of the newest record uploaded, at its upload.",
    _LABELS,
    registry=REGISTRY,
)
SHARD_LAG = Gauge(
    "flowexport_shard_lag_seconds",
    "Mode stream: how far a shard's reading is behind the stream's tip (MillisBehindLatest).",
    (*_LABELS, "shard"),
    registry=REGISTRY,
)
CONDITION = Gauge(
    "flowexport_condition",
    "1 when the condition is True, 0 when not.",
    (*_LABELS, "type"),
    registry=REGISTRY,
)
WORKLOAD_CHANGES = Counter(
    "flowexport_workload_changes",
    "PCE workloads created, updated or deleted by the workload sync, and changes refused.",
    (*_LABELS, "action"),
    registry=REGISTRY,
)
WORKLOADS = Gauge(
    "flowexport_workloads",
    "PCE workloads this FlowExport owns, after its last workload sync.",
    _LABELS,
    registry=REGISTRY,
)
WORKERS = Gauge(
    "flowexport_workers", "Ingestion workers running in this operator.", registry=REGISTRY
)


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Serve /metrics on `port` (a background thread)."""
    start_http_server(port, addr=address, registry=REGISTRY)


def count_progress(namespace: str, name: str, before: Progress | None, after: Progress) -> None:
    """Add what changed between two checkpoints of a FlowExport's pipeline."""
    if before is None:
        before = Progress(after.cursor)  # the first report counts from zero
    labels = (namespace, name)
    _add(RECORDS_READ.labels(*labels), after.records_read - before.records_read)
    _add(FLOWS_UPLOADED.labels(*labels), after.flows_uploaded - before.flows_uploaded)
    _add(FLOWS_REJECTED.labels(*labels), after.flows_failed - before.flows_failed)
    _add(BATCHES.labels(*labels), after.batches_uploaded - before.batches_uploaded)
    for reason, count in after.records_skipped.items():
        _add(RECORDS_SKIPPED.labels(*labels, reason), count - before.records_skipped.get(reason, 0))
    if after.lag_seconds is not None:
        LAG.labels(*labels).set(after.lag_seconds)


def _add(counter: Counter, delta: int) -> None:
    if delta > 0:  # a rollback to a checkpoint is not an un-count
        counter.inc(delta)


def set_shard_lag(namespace: str, name: str, shard: str, seconds: float) -> None:
    """A shard's MillisBehindLatest, in seconds."""
    SHARD_LAG.labels(namespace, name, shard).set(seconds)


def count_error(namespace: str, name: str, stage: str, reason: str) -> None:
    """A failure at `stage` (a condition type) with its condition reason."""
    ERRORS.labels(namespace, name, stage, reason).inc()


def set_condition(namespace: str, name: str, type_: str, ok: bool | None) -> None:
    """The condition as 1 (True) or 0 (False or Unknown)."""
    CONDITION.labels(namespace, name, type_).set(1 if ok else 0)


def observe_upload(namespace: str, name: str, seconds: float) -> None:
    """How long one flush's upload took."""
    UPLOAD_SECONDS.labels(namespace, name).observe(seconds)


def count_workloads(namespace: str, name: str, managed: int, **changes: int) -> None:
    """One workload sync: workloads owned after it, and its changes by action (created,
    updated, deleted, failed)."""
    WORKLOADS.labels(namespace, name).set(managed)
    for action, count in changes.items():
        _add(WORKLOAD_CHANGES.labels(namespace, name, action), count)


def forget_workloads(namespace: str, name: str) -> None:
    """Drop a FlowExport's workload gauge (its workloads are no longer synced)."""
    with contextlib.suppress(KeyError):
        WORKLOADS.remove(namespace, name)


def forget(namespace: str, name: str) -> None:
    """Drop a deleted FlowExport's series."""
    for metric in (
        RECORDS_READ,
        FLOWS_UPLOADED,
        FLOWS_REJECTED,
        BATCHES,
        UPLOAD_SECONDS,
        LAG,
        WORKLOADS,
    ):
        with contextlib.suppress(KeyError):
            metric.remove(namespace, name)
    for metric in (RECORDS_SKIPPED, ERRORS, CONDITION, WORKLOAD_CHANGES, SHARD_LAG):
        for labels in list(metric._metrics):  # no public way to list a family's children
            if labels[:2] == (namespace, name):
                metric.remove(*labels)


def generate_text() -> bytes:
    """The exposition text, as /metrics serves it."""
    return generate_latest(REGISTRY)
