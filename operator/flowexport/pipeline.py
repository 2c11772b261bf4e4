"""One FlowExport's ingestion: CloudWatch Logs -> core -> PCE, checkpointing after acceptance.

The same loop runs inside the operator (a kopf daemon) and standalone (`flowexport sync`).

Invariants:
- The cursor handed to `checkpoint` only ever covers events whose flows the PCE accepted (or
  rejected as bad lines, which retrying would not change). A crash re-reads from the last
  checkpoint: nothing is lost.
- Events are consumed in chunks of at most half a batch, and pending flows are flushed once
  they reach half a batch, so a flush is one PCE request: a crash between the PCE's answer
  and the checkpoint re-uploads at most that one batch.
- Within an aggregation window a flow is uploaded once, however many records and polls
  repeat it; memory holds an 8-byte digest per unique flow of the window, not its records.
- The window (its start and those digests) is checkpointed with the cursor, so a restart
  does not upload the window's flows again: a clean stop repeats nothing, a crash repeats at
  most the one batch in flight. Past `MAX_CHECKPOINTED_FLOWS` unique flows in one window, the
  checkpoint keeps that many; the others may be uploaded once more after a restart.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from flowexport.api.models import FlowExportSpec
from flowexport.aws.blocking import off_loop, until_stopped
from flowexport.aws.reader import Chunk, LogReader, ReaderCursor
from flowexport.aws.s3 import ObjectChunk
from flowexport.aws.session import AwsClients, RateLimiter
from flowexport.core.flows import Flow
from flowexport.core.logformat import LogFormat
from flowexport.core.normalise import FlowFilter
from flowexport.core.processor import FlowProcessor
from flowexport.errors import FlowExportError, unexpected
from flowexport.pce.client import PCEClient, UploadSummary

log = logging.getLogger("flowexport.pipeline")

#: Longest wait between retries after transient failures.
MAX_BACKOFF_SECONDS = 300.0
#: Once asked to stop, how long an upload in flight may still take before it is abandoned
#: (its flows may then reach the PCE once more after a restart: the batch in flight).
STOP_GRACE_SECONDS = 5.0
#: Unique flows of one window kept in a checkpoint (8 bytes each: 128 KiB, ~171 KiB in base64,
#: well inside the API server's object size limit of about 1.5 MiB).
MAX_CHECKPOINTED_FLOWS = 16_384
_DIGEST_SIZE = 8
#: The skip reason (status.counts.recordsSkipped) of mode s3's records that ended before the
#: switch from another mode had it start (that mode read them).
BEFORE_SWITCH = "before_switch"


def flow_digest(flow: Flow) -> bytes:
    """A flow's 8-byte identity in the window record (a collision chance of ~1e-11 per pair
    of flows in a window of 16k: negligible against the loss it would cause)."""
    key = f"{flow.client_ip}|{flow.server_ip}|{flow.server_port}|{flow.protocol}"
    return hashlib.blake2b(key.encode(), digest_size=_DIGEST_SIZE).digest()


@dataclass(frozen=True)
class Window:
    """The aggregation window in progress: its start and the digests of the flows uploaded
    in it, concatenated (at most MAX_CHECKPOINTED_FLOWS; immutable, so cheap to keep)."""

    start_ms: int
    digests: bytes = b""

    def __deepcopy__(self, memo: dict[int, Any]) -> Window:
        return self

    def with_flows(self, digests: Iterable[bytes], limit: int = MAX_CHECKPOINTED_FLOWS) -> Window:
        """This window with more uploaded flows recorded (up to `limit`, the checkpoint's
        room)."""
        room = limit * _DIGEST_SIZE - len(self.digests)
        added = b"".join(digests)[: max(0, room)]
        return Window(self.start_ms, self.digests + added) if added else self

    def flows(self) -> set[bytes]:
        """The digests, as a set."""
        blob = self.digests
        return {blob[i : i + _DIGEST_SIZE] for i in range(0, len(blob), _DIGEST_SIZE)}

    def to_state(self) -> dict[str, Any]:
        """JSON-ready: the start and the digests in base64."""
        return {"start": self.start_ms, "flows": base64.b64encode(self.digests).decode()}

    @classmethod
    def from_state(cls, state: Any) -> Window | None:
        """Read back what `to_state` wrote; None when absent or damaged (a new window)."""
        if not isinstance(state, dict):
            return None
        try:
            raw = base64.b64decode(str(state.get("flows") or ""), validate=True)
            start = int(state["start"])
        except (KeyError, TypeError, ValueError, binascii.Error):
            return None
        if len(raw) % _DIGEST_SIZE:
            return None
        return cls(start, raw)


class Cursor(Protocol):
    """Where a reader resumes: a log group's (`ReaderCursor`) or a shard's (`ShardCursor`)."""

    def to_status(self) -> dict[str, Any]: ...


class Reader(Protocol):
    """What the pipeline reads from: chunks of events from a cursor (blocking; run in a
    thread), the last marked `final`."""

    def chunks(self, cursor: Any, now_ms: int, chunk_size: int) -> Iterator[Chunk]: ...


@dataclass
class Progress:
    """What the pipeline has done, as saved with each checkpoint."""

    cursor: Any
    records_read: int = 0
    records_skipped: dict[str, int] = field(default_factory=dict)
    flows_uploaded: int = 0
    flows_failed: int = 0
    batches_uploaded: int = 0
    last_upload_time: datetime | None = None
    lag_seconds: int | None = None
    #: The aggregation window at this checkpoint (kept in the status's cursor).
    window: Window | None = None

    def add_counts(self, other: Progress) -> None:
        """Add another pipeline's counts (and its last upload, if later) to these."""
        self.records_read += other.records_read
        self.flows_uploaded += other.flows_uploaded
        self.flows_failed += other.flows_failed
        self.batches_uploaded += other.batches_uploaded
        for reason, count in other.records_skipped.items():
            self.records_skipped[reason] = self.records_skipped.get(reason, 0) + count
        last = other.last_upload_time
        if last is not None and (self.last_upload_time is None or last > self.last_upload_time):
            self.last_upload_time = last

    def to_state(self) -> dict[str, Any]:
        """JSON-ready, in the status's field names."""
        return {
            "cursor": {
                **self.cursor.to_status(),
                "window": self.window.to_state() if self.window else None,
            },
            "counts": {
                "recordsRead": self.records_read,
                "recordsSkipped": dict(sorted(self.records_skipped.items())),
                "flowsUploaded": self.flows_uploaded,
                "flowsFailed": self.flows_failed,
                "batchesUploaded": self.batches_uploaded,
            },
            "lastUploadTime": self.last_upload_time.isoformat().replace("+00:00", "Z")
            if self.last_upload_time
            else None,
            "lagSeconds": self.lag_seconds,
        }

    @classmethod
    def from_state(
        cls, state: dict[str, Any], read_cursor: Callable[[dict[str, Any]], Any] | None = None
    ) -> Progress:
        """Read back what `to_state` wrote (a log group's cursor unless `read_cursor` says
        otherwise); raises ValueError if it is not that."""
        read_cursor = read_cursor or ReaderCursor.from_status
        try:
            last = state.get("lastUploadTime")
            progress = cls(
                cursor=read_cursor(state["cursor"]),
                window=Window.from_state(state["cursor"].get("window")),
                last_upload_time=datetime.fromisoformat(last.replace("Z", "+00:00"))
                if last
                else None,
                lag_seconds=state.get("lagSeconds"),
            )
            progress.set_counts(state.get("counts") or {})
            return progress
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"not a saved pipeline state: {exc}") from None

    def set_counts(self, counts: dict[str, Any]) -> None:
        """Take the counts `to_state` wrote (all or none: raises TypeError, ValueError or
        AttributeError on a damaged one)."""
        read = int(counts.get("recordsRead", 0))
        skipped = {str(k): int(v) for k, v in (counts.get("recordsSkipped") or {}).items()}
        uploaded = int(counts.get("flowsUploaded", 0))
        failed = int(counts.get("flowsFailed", 0))
        batches = int(counts.get("batchesUploaded", 0))
        self.records_read, self.records_skipped = read, skipped
        self.flows_uploaded, self.flows_failed, self.batches_uploaded = uploaded, failed, batches


Checkpoint = Callable[[Progress], Awaitable[None]]
#: Called with the flows of a flush before they are uploaded (e.g. to make their workloads);
#: an exception fails the flush like a failed upload.
Prepare = Callable[[list[Flow]], Awaitable[object]]


class Pipeline:
    """Read, normalise, aggregate and upload one FlowExport's flow logs."""

    def __init__(
        self,
        reader: Reader,
        fmt: LogFormat,
        flow_filter: FlowFilter,
        pce: PCEClient,
        progress: Progress,
        checkpoint: Checkpoint,
        *,
        batch_size: int = 1000,
        window_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
        on_upload: Callable[[float], None] | None = None,
        prepare: Prepare | None = None,
        max_window_flows: int = MAX_CHECKPOINTED_FLOWS,
    ) -> None:
        self.reader = reader
        self.max_window_flows = max_window_flows
        self.fmt = fmt
        self.filter = flow_filter
        self.pce = pce
        self.progress = progress
        self.checkpoint = checkpoint
        self.batch_size = batch_size
        self.window_seconds = window_seconds
        self.clock = clock
        self.on_upload = on_upload
        self.prepare = prepare
        self._chunk = max(1, batch_size // 2)
        self._saved = copy.deepcopy(progress)
        self._processor = FlowProcessor(fmt, flow_filter)
        self._pending: dict[Flow, int] = {}
        saved = progress.window
        if saved is None or clock() * 1000 - saved.start_ms >= window_seconds * 1000:
            saved = Window(int(clock() * 1000))
        self._window = saved
        self._uploaded_in_window: set[bytes] = saved.flows()
        self._newest_ms = 0

    async def run_once(self, stop: asyncio.Event | None = None) -> Progress:
        """Read until caught up (one slice), uploading and checkpointing as flows accumulate.

        On any failure the in-memory state rolls back to the last checkpoint and the error is
        raised; the next call re-reads from there. When `stop` is set, a read under way is
        abandoned, what was read is uploaded and checkpointed (the request in flight gets
        `STOP_GRACE_SECONDS`, then is abandoned too) and the call returns; a checkpoint not
        saved at a stop (`CheckpointNotSavedError`) rolls back to the last saved one and
        returns, uploading nothing more.
        """
        chunks = self.reader.chunks(self.progress.cursor, int(self.clock() * 1000), self._chunk)
        last: Any = None
        try:
            while True:
                chunk = await until_stopped(off_loop(_next_chunk, chunks), stop)
                stopping = stop is not None and stop.is_set()
                if chunk is None:
                    if stopping and last is not None and last != self.progress.cursor:
                        # Checkpoint what was read, flows to upload or not: the counts
                        # returned must not run ahead of the cursor saved.
                        await self._flush(last, stop)
                    break
                self._consume(chunk)
                last = chunk.cursor
                closing = chunk.final
                if closing or stopping or self._should_flush():
                    await self._flush(chunk.cursor, stop)
                if stopping:
                    break
        except (_AbandonedError, CheckpointNotSavedError):
            self._rollback()
        except BaseException:
            self._rollback()
            raise
        return self.progress

    async def run_forever(
        self,
        stop: asyncio.Event,
        poll_seconds: float,
        on_error: Callable[[FlowExportError], Awaitable[None]] | None = None,
        on_success: Callable[[], Awaitable[None]] | None = None,
        until: Callable[[Progress], bool] | None = None,
    ) -> None:
        """Poll until `stop` is set (or nothing is left to read, or `until` holds for the
        progress); retryable errors back off, terminal ones are raised.

        An unexpected exception (a bug, or input nothing foresaw) is logged and retried as an
        `InternalError`: the cursor stays at the last checkpoint and the worker stays alive.
        """

        def done() -> bool:
            return self.finished or (until is not None and until(self.progress))

        failures = 0
        while not stop.is_set() and not done():
            try:
                await self.run_once(stop)
                failures = 0
                delay = poll_seconds
                if on_success is not None:
                    await on_success()
            except Exception as exc:
                if isinstance(exc, FlowExportError):
                    error = exc
                    if not error.retryable:
                        raise
                else:
                    log.exception("ingestion failed unexpectedly")
                    error = unexpected(exc)
                failures += 1
                delay = min(MAX_BACKOFF_SECONDS, poll_seconds * 2 ** min(failures, 10))
                log.warning("ingestion failed (%s); retrying in %.0fs", error, delay)
                if on_error is not None:
                    await on_error(error)
            if done():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    @property
    def finished(self) -> bool:
        """Whether there is nothing more to read (a closed shard read to its end)."""
        return bool(getattr(self.progress.cursor, "ended", False))

    def _consume(self, chunk: Chunk) -> None:
        skipped = self.progress.records_skipped
        if chunk.undecodable:
            skipped["undecodable"] = skipped.get("undecodable", 0) + chunk.undecodable
        rows = chunk.rows if isinstance(chunk, ObjectChunk) else None
        if isinstance(chunk, ObjectChunk) and chunk.earlier:
            # Mode s3 after a switch: records the mode before had read.
            skipped[BEFORE_SWITCH] = skipped.get(BEFORE_SWITCH, 0) + chunk.earlier
            self.progress.records_read += chunk.earlier
        if rows is not None and rows.num_rows:
            assert isinstance(chunk, ObjectChunk)
            self._consume_rows(rows, chunk.timestamp)
        if not chunk.events:
            return
        before = dict(self._processor.stats.skipped)
        self._processor.feed(e.message for e in chunk.events)
        for reason, count in self._processor.stats.skipped.items():
            delta = count - before.get(reason, 0)
            if delta:
                key = str(reason)
                self.progress.records_skipped[key] = (
                    self.progress.records_skipped.get(key, 0) + delta
                )
        self.progress.records_read += len(chunk.events)
        self._newest_ms = max(self._newest_ms, *(e.timestamp for e in chunk.events))
        for flow, records in self._processor.drain():
            if flow_digest(flow) not in self._uploaded_in_window:
                self._pending[flow] = self._pending.get(flow, 0) + records

    def _consume_rows(self, rows: Any, timestamp: int) -> None:
        """A Parquet record batch (mode s3), through the columnar core."""
        before = dict(self._processor.stats.skipped)
        self._processor.feed_batch(rows)
        for reason, count in self._processor.stats.skipped.items():
            delta = count - before.get(reason, 0)
            if delta:
                key = str(reason)
                self.progress.records_skipped[key] = (
                    self.progress.records_skipped.get(key, 0) + delta
                )
        self.progress.records_read += rows.num_rows
        self._newest_ms = max(self._newest_ms, timestamp)
        for flow, records in self._processor.drain():
            if flow_digest(flow) not in self._uploaded_in_window:
                self._pending[flow] = self._pending.get(flow, 0) + records

    def _should_flush(self) -> bool:
        return len(self._pending) >= self._chunk or self._window_over()

    def _window_over(self) -> bool:
        return self.clock() * 1000 - self._window.start_ms >= self.window_seconds * 1000

    async def _flush(self, cursor: Any, stop: asyncio.Event | None = None) -> None:
        """Upload pending flows (one request), then checkpoint the cursor after them."""
        flows = list(self._pending)
        if flows:
            started = time.monotonic()
            summary = await _with_grace(self._upload(flows), stop)
            if self.on_upload is not None:
                self.on_upload(time.monotonic() - started)
            now = self.clock()
            self.progress.flows_uploaded += summary.accepted
            self.progress.flows_failed += summary.failed
            self.progress.batches_uploaded += summary.batches
            self.progress.last_upload_time = datetime.fromtimestamp(now, UTC)
            self.progress.lag_seconds = max(0, int(now - self._newest_ms / 1000))
            digests = [flow_digest(f) for f in flows]
            self._uploaded_in_window.update(digests)
            self._window = self._window.with_flows(digests, self.max_window_flows)
            log.debug("uploaded %d flows (%d rejected)", summary.accepted, summary.failed)
        self._pending.clear()
        if self._window_over():
            self._window = Window(int(self.clock() * 1000))
            self._uploaded_in_window.clear()
        self.progress.window = self._window
        self.progress.cursor = cursor
        await self.checkpoint(self.progress)
        self._saved = copy.deepcopy(self.progress)

    async def _upload(self, flows: list[Flow]) -> UploadSummary:
        if self.prepare is not None:
            await self.prepare(flows)
        return await self.pce.upload_all(flows, self.batch_size)

    def _rollback(self) -> None:
        self.progress = copy.deepcopy(self._saved)
        self._processor = FlowProcessor(self.fmt, self.filter)
        self._pending.clear()


def _next_chunk(chunks: Iterator[Chunk]) -> Chunk | None:
    return next(chunks, None)


class CheckpointNotSavedError(Exception):
    """Raised by a `Checkpoint` that could not save the progress while stopping: the run ends
    at the last checkpoint saved, uploading nothing more (so a stop repeats at most the batch
    before it)."""


class _AbandonedError(Exception):
    """The upload in flight outlived the grace after a stop: nothing is checkpointed."""


async def _with_grace(
    upload: Awaitable[UploadSummary], stop: asyncio.Event | None
) -> UploadSummary:
    """The upload's summary; once `stop` is set it gets STOP_GRACE_SECONDS, then is cancelled
    (retry sleeps included) and `_AbandonedError` is raised."""
    task = asyncio.ensure_future(upload)
    try:
        if stop is not None:
            await until_stopped(asyncio.shield(task), stop)
            if not task.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(task), STOP_GRACE_SECONDS)
            if not task.done():
                log.warning(
                    "stopping: abandoned the upload in flight after %.0fs", STOP_GRACE_SECONDS
                )
                raise _AbandonedError
        return await task
    finally:
        if not task.done():  # abandoned, or this coroutine was cancelled: no orphan goes on
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def build_pipeline(
    spec: FlowExportSpec,
    clients: AwsClients,
    fmt: LogFormat,
    pce: PCEClient,
    progress: Progress,
    checkpoint: Checkpoint,
    *,
    settle_seconds: float,
    on_upload: Callable[[float], None] | None = None,
    prepare: Prepare | None = None,
    log_group_arn: str | None = None,
) -> Pipeline:
    """The pipeline a FlowExport's spec describes, reading with `clients` in format `fmt` (the
    cursors belonging to the log group `log_group_arn`). Its reads keep to the spec's
    apiRequestsPerSecond and wait their turn in the process's FilterLogEvents budget of the
    account and region (`flowexport.aws.budget`)."""
    reader = LogReader(
        clients,
        spec.aws.log_group_name or "",  # unused by a source that reads no log group
        spec.ingestion.lookback_seconds,
        settle_seconds=settle_seconds,
        limiter=RateLimiter(spec.aws.api_requests_per_second),
        log_group_arn=log_group_arn,
        shared_budget=True,
    )
    return pipeline_for(
        spec, reader, fmt, pce, progress, checkpoint, on_upload=on_upload, prepare=prepare
    )


def pipeline_for(
    spec: FlowExportSpec,
    reader: Reader,
    fmt: LogFormat,
    pce: PCEClient,
    progress: Progress,
    checkpoint: Checkpoint,
    *,
    on_upload: Callable[[float], None] | None = None,
    prepare: Prepare | None = None,
    max_window_flows: int = MAX_CHECKPOINTED_FLOWS,
) -> Pipeline:
    """A pipeline over `reader` with the spec's filters, batch size and window."""
    ingestion = spec.ingestion
    flow_filter = FlowFilter.build(
        ingestion.actions, ingestion.include_cidrs, ingestion.exclude_cidrs
    )
    return Pipeline(
        reader,
        fmt,
        flow_filter,
        pce,
        progress,
        checkpoint,
        batch_size=ingestion.batch_size,
        window_seconds=ingestion.aggregation_window_seconds,
        on_upload=on_upload,
        prepare=prepare,
        max_window_flows=max_window_flows,
    )
