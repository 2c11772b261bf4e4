"""Prometheus metrics of the operator, per FlowExport (labels `namespace`, `name`).

Counters count what this process did (they start at zero with the process, as Prometheus
expects); the totals since the FlowExport was created are in its status.

Two timestamps let an alert see a stall, which a value set only when something happens
cannot: `flowexport_last_progress_timestamp_seconds` (when reading last moved: a checkpoint
of the log group's cursor, which a healthy worker makes every poll whether or not it found
records, or of a Kinesis shard, made after every read) and, in mode poll,
`flowexport_read_through_timestamp_seconds` (every record CloudWatch Logs ingested before it
has been read and its flows accepted). `time() - ...` of either keeps growing while nothing is
read or uploaded, whatever the cause: a PCE or AWS outage, a hung worker.
`flowexport_suspended` tells a FlowExport that stands still on purpose. Both timestamps are
set here, from the checkpoints and conditions the worker reports, at no extra call site.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    start_http_server,
)

from flowexport import __version__
from flowexport.api.conditions import SUMMARY
from flowexport.aws.kinesis_reader import ShardCursor
from flowexport.aws.reader import ReaderCursor
from flowexport.pipeline import Progress

REGISTRY = CollectorRegistry(auto_describe=True)
_LABELS = ("namespace", "name")

# The process (memory, CPU, open files: process_resident_memory_bytes is what an OOMKill is
# measured against) and the interpreter (python_info, python_gc_*), as the default registry
# of prometheus_client would have them.
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

#: The environment variable the image sets to the Git revision it was built from.
REVISION_ENV = "FLOWEXPORT_REVISION"

BUILD_INFO = Gauge(
    "flowexport_build_info",
    "Always 1; the labels say which build runs: version, Git revision, Python version.",
    ("version", "revision", "python"),
    registry=REGISTRY,
)
BUILD_INFO.labels(
    __version__, os.environ.get(REVISION_ENV) or "unknown", platform.python_version()
).set(1)

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
PART_FAILURES = Counter(
    "flowexport_part_failures",
    "Parts of a source that could not be read, by part and reason (mode s3: an object's key "
    "and ObjectUnreadable; each is left to the queue's redrive policy).",
    (*_LABELS, "part", "reason"),
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
LAST_PROGRESS = Gauge(
    "flowexport_last_progress_timestamp_seconds",
    "Unix time this process last saw the FlowExport's reading move (a checkpoint of the log "
    "group's cursor, made every poll when healthy, or of a Kinesis shard, made after every "
    "read); set when it is first seen. time() minus it grows while reading stalls.",
    _LABELS,
    registry=REGISTRY,
)
READ_THROUGH = Gauge(
    "flowexport_read_through_timestamp_seconds",
    "Mode poll: every record CloudWatch Logs ingested before this Unix time has been read and "
    "its flows accepted by the PCE (the cursor's ingestedThrough). time() minus it is the age "
    "of the oldest record not yet handled.",
    _LABELS,
    registry=REGISTRY,
)
SUSPENDED = Gauge(
    "flowexport_suspended",
    "1 while the FlowExport is suspended (spec.suspend: Ready False with reason Suspended).",
    _LABELS,
    registry=REGISTRY,
)

#: Each FlowExport's `Ready`, `Reconciling` and `Stalled` as last set (see `set_condition`).
_SUMMARY: dict[tuple[str, str], dict[str, bool]] = {}
#: The wall clock the timestamps are read from (a test may replace it).
clock: Callable[[], float] = time.time


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Serve /metrics on `port` (a background thread)."""
    start_http_server(port, addr=address, registry=REGISTRY)


def count_progress(namespace: str, name: str, before: Progress | None, after: Progress) -> None:
    """Add what changed between two checkpoints of a FlowExport's pipeline."""
    first = before is None
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
    cursor = after.cursor
    # A shard's checkpoint follows a read (idle or not); the log group's cursor moves with every
    # poll. The same cursor reported again (a pipeline stopping) is not progress.
    if isinstance(cursor, ShardCursor) or cursor != before.cursor or first:
        LAST_PROGRESS.labels(*labels).set(clock())
        if isinstance(cursor, ReaderCursor):
            READ_THROUGH.labels(*labels).set(cursor.ingested_through / 1000)


def _add(counter: Counter, delta: int) -> None:
    if delta > 0:  # a rollback to a checkpoint is not an un-count
        counter.inc(delta)


def set_shard_lag(namespace: str, name: str, shard: str, seconds: float) -> None:
    """A shard's MillisBehindLatest, in seconds. The FlowExport reads a stream: its log
    group's cursor (read up to the stream's start) no longer says how far reading is."""
    SHARD_LAG.labels(namespace, name, shard).set(seconds)
    with contextlib.suppress(KeyError):
        READ_THROUGH.remove(namespace, name)


def count_error(namespace: str, name: str, stage: str, reason: str) -> None:
    """A failure at `stage` (a condition type) with its condition reason."""
    ERRORS.labels(namespace, name, stage, reason).inc()


def count_part_failure(namespace: str, name: str, part: str, reason: str) -> None:
    """A part of a source (mode s3: an object) that could not be read."""
    PART_FAILURES.labels(namespace, name, part, reason).inc()


def set_condition(namespace: str, name: str, type_: str, ok: bool | None) -> None:
    """The condition as 1 (True) or 0 (False or Unknown).

    Also `flowexport_suspended`: `Ready`, `Reconciling` and `Stalled` all False happens only
    while suspended (`api.conditions.kstatus_of`: Ready not True is Stalled for a terminal
    reason and Reconciling for any other but Suspended). The first condition of a FlowExport
    starts its progress clock, so a worker that never checkpoints is seen too."""
    CONDITION.labels(namespace, name, type_).set(1 if ok else 0)
    key = (namespace, name)
    if key not in _SUMMARY:
        _SUMMARY[key] = {}
        if not _has(LAST_PROGRESS, key):
            LAST_PROGRESS.labels(*key).set(clock())
    if type_ in SUMMARY:
        summary = _SUMMARY[key]
        summary[type_] = bool(ok)
        if len(summary) == len(SUMMARY):
            SUSPENDED.labels(*key).set(0 if any(summary.values()) else 1)


def _has(gauge: Gauge, labels: tuple[str, ...]) -> bool:
    return labels in gauge._metrics  # no public way to ask for a child without making it


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
        LAST_PROGRESS,
        READ_THROUGH,
        SUSPENDED,
    ):
        with contextlib.suppress(KeyError):
            metric.remove(namespace, name)
    _SUMMARY.pop((namespace, name), None)
    for metric in (RECORDS_SKIPPED, ERRORS, CONDITION, WORKLOAD_CHANGES, SHARD_LAG, PART_FAILURES):
        for labels in list(metric._metrics):  # no public way to list a family's children
            if labels[:2] == (namespace, name):
                metric.remove(*labels)


def generate_text() -> bytes:
    """The exposition text, as /metrics serves it."""
    return generate_latest(REGISTRY)


# -- FlowExportSets (labels `namespace`, `set`) --------------------------------------------

_SET_LABELS = ("namespace", "set")
VPCS_WITHOUT_FLOW_LOG = Gauge(
    "flowexport_vpcs_without_flow_log",
    "FlowExportSet: selected VPCs without a flow log to the set's destination, at its last "
    "discovery (of the accounts and regions it could read).",
    _SET_LABELS,
    registry=REGISTRY,
)
SET_VPCS = Gauge(
    "flowexport_set_vpcs",
    "FlowExportSet: selected VPCs at its last discovery.",
    _SET_LABELS,
    registry=REGISTRY,
)
SET_ACCOUNTS = Gauge(
    "flowexport_set_accounts",
    "FlowExportSet: accounts in scope at its last discovery, by state (granted, refused, failed).",
    (*_SET_LABELS, "state"),
    registry=REGISTRY,
)
SET_AWS_CALLS = Counter(
    "flowexport_set_aws_calls",
    "FlowExportSet: AWS calls its discoveries made (Organizations, DescribeVpcs, "
    "DescribeFlowLogs, CreateFlowLogs).",
    _SET_LABELS,
    registry=REGISTRY,
)
_SET_STATES = ("granted", "refused", "failed")


def set_coverage(
    namespace: str, name: str, vpcs: int, without: int, accounts: dict[str, int], calls: int
) -> None:
    """A FlowExportSet's discovery: VPCs in scope and without a flow log, accounts by state,
    and the AWS calls it made."""
    VPCS_WITHOUT_FLOW_LOG.labels(namespace, name).set(without)
    SET_VPCS.labels(namespace, name).set(vpcs)
    for state in _SET_STATES:
        SET_ACCOUNTS.labels(namespace, name, state).set(accounts.get(state, 0))
    _add(SET_AWS_CALLS.labels(namespace, name), calls)


def forget_set(namespace: str, name: str) -> None:
    """Drop a deleted FlowExportSet's series."""
    for gauge in (VPCS_WITHOUT_FLOW_LOG, SET_VPCS, SET_AWS_CALLS):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, name)
    for state in _SET_STATES:
        with contextlib.suppress(KeyError):
            SET_ACCOUNTS.remove(namespace, name, state)
