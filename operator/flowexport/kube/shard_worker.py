"""Mode stream across replicas: the shards one replica reads of a FlowExport another holds.

The replica holding a FlowExport (see `shards.py`) reconciles it, polls its log group up to
the stream's start, reports its conditions and counts, and reads its share of the shards.
Every other replica reads its own share: a shard belongs to the live replica with the highest
hash of `<uid>/<shard id>` (the same rendezvous hashing and hand-over delay as FlowExports),
so throughput grows with replicas and a dead replica's shards move within the same bound.
Each replica writes only its shards' entries in status.shards.

With spec.workloads.mode Sync every shard stays with the holder: peer workloads are created
before each upload by its workload sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from flowexport import lifecycle
from flowexport.api.conditions import ConditionUpdate
from flowexport.api.validation import SpecError, parse_spec
from flowexport.aws.stream import StreamSubscription
from flowexport.core.logformat import LogFormat, LogFormatError
from flowexport.kube import metrics
from flowexport.kube.replicas import STOP_SECONDS
from flowexport.kube.shard_book import KubeShardBook
from flowexport.kube.state import TERMINAL_RETRY_SECONDS, Operator
from flowexport.kube.status_writer import StatusWriter

log = logging.getLogger("flowexport.operator")

#: Seconds between checks for what ends the reading (a new generation, stream start, holder).
WAKE_SECONDS = 1.0
#: Seconds before reading again after a retryable failure ended it.
RETRY_SECONDS = 30.0
#: Seconds the holder waits before reading shards the other replicas read until now (mode
#: poll again, another stream, workloads Sync): time for them to notice and stop.
TAKE_BACK_SECONDS = WAKE_SECONDS + STOP_SECONDS + 1.0


def shard_key(uid: str, shard_id: str) -> str:
    """What a shard's replica is decided by."""
    return f"{uid}/{shard_id}"


def stream_of(source: Any) -> tuple[StreamSubscription, LogFormat] | None:
    """The stream and log format the holder's status.source names (None unless mode stream
    with the shards shared, or if written by a version that did not record them)."""
    if not isinstance(source, Mapping) or source.get("mode") != "stream":
        return None
    if source.get("shared") is not True:
        return None  # the holder reads every shard
    try:
        stream = StreamSubscription(
            stream_arn=str(source["streamArn"]),
            stream_name=str(source["streamName"]),
            filter_name=str(source.get("subscriptionFilter") or ""),
            filter_since_ms=int(source["since"]),
            retention_hours=int(source["retentionHours"]),
            stream_owned=False,
            filter_owned=False,
        )
        return stream, LogFormat.parse(str(source["logFormat"]))
    except (KeyError, TypeError, ValueError, LogFormatError):
        return None


def source_status(
    stream: StreamSubscription, since: int, log_format: LogFormat, shared: bool
) -> dict[str, Any]:
    """status.source in mode stream: what the other replicas need to read shards."""
    return {
        "shared": shared,
        "mode": "stream",
        "streamArn": stream.stream_arn,
        "streamName": stream.stream_name,
        "subscriptionFilter": stream.filter_name,
        "retentionHours": stream.retention_hours,
        "logFormat": log_format.render(),
        "since": since,
    }


async def read_shards(op: Operator, body: Any, stopped: Any, uid: str) -> None:
    """Read this replica's shards of a FlowExport another replica holds, until that changes
    (the holder, the generation or the stream start); returns after a short wait when there
    is nothing to read here."""
    metadata = body["metadata"]
    namespace, name = metadata.get("namespace") or "", metadata.get("name") or ""
    generation = metadata.get("generation")
    found = stream_of((body.get("status") or {}).get("source")) if op.replicas.enabled else None
    try:
        spec = parse_spec(dict(body["spec"])) if found is not None else None
    except SpecError:
        spec = None
    if found is None or spec is None or spec.suspend or spec.source.mode != "stream":
        await stopped.wait(WAKE_SECONDS)
        return
    stream, log_format = found

    def changed() -> bool:
        return bool(
            stopped
            or op.replicas.owns(uid)
            or body["metadata"].get("generation") != generation
            or stream_of((body.get("status") or {}).get("source")) != found
        )

    board = StatusWriter(namespace, name, op.api.patch_status, shards_only=True)
    board.load(dict(body.get("status") or {}))
    book = KubeShardBook(
        board,
        op.events,
        body,
        stream.filter_since_ms,
        op.replicas.identity,
        lambda shard_id: op.replicas.owns(shard_key(uid, shard_id)),
        prunes=False,
    )

    async def report(update: ConditionUpdate) -> None:
        # The holder reports conditions; failures here are in the shard's entry and the log.
        if update.ok is False:
            metrics.count_error(namespace, name, update.type, update.reason)
            log.warning("%s/%s: %s", namespace, name, update.message)

    stop = asyncio.Event()

    async def watch() -> None:
        stopping = asyncio.ensure_future(stopped.wait())
        try:
            while not stop.is_set():
                await asyncio.wait({stopping}, timeout=WAKE_SECONDS)
                if changed():
                    stop.set()
        finally:
            stopping.cancel()

    watcher = asyncio.create_task(watch())
    try:
        result = await lifecycle.read_shards(
            spec,
            stream,
            log_format,
            op.secrets(namespace, spec),
            book,
            stream.filter_since_ms,
            stop=stop,
            report=report,
            on_upload=lambda seconds: metrics.observe_upload(namespace, name, seconds),
        )
    finally:
        stop.set()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    await board.write(force=True)
    if result.error is not None:
        log.warning("%s/%s: reading shards stopped: %s", namespace, name, result.error)
        delay = RETRY_SECONDS if result.error.retryable else TERMINAL_RETRY_SECONDS
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not changed():
            await stopped.wait(WAKE_SECONDS)
