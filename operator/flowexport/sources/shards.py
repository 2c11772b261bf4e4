"""Mode stream: one pipeline per Kinesis shard, parents read to their end before children.

Each shard runs the same pipeline as polling (core, aggregation, uploader, checkpoint after
the PCE accepted) over a `ShardReader`, with its own cursor and counts kept by a `ShardBook`:
the FlowExport's status in the operator (each replica writing the shards it holds), memory in
`flowexport sync`. A shard is read only where the book says it is owned; a child shard waits
until every parent still listed was read to its end, so a resharded stream keeps each
network interface's records in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from flowexport.api.conditions import ConditionType, ConditionUpdate, Report
from flowexport.api.models import FlowExportSpec
from flowexport.aws.blocking import off_loop
from flowexport.aws.errors import AwsError, classify, error_code
from flowexport.aws.kinesis_reader import RECORDS_LIMIT, ShardCursor, ShardReader
from flowexport.aws.session import AwsClients
from flowexport.aws.stream import StreamSubscription, filter_in_place
from flowexport.core.logformat import LogFormat
from flowexport.errors import FlowExportError, Reason
from flowexport.pce.client import PCEClient
from flowexport.pipeline import (
    MAX_CHECKPOINTED_FLOWS,
    Pipeline,
    Prepare,
    Progress,
    Window,
    pipeline_for,
)

log = logging.getLogger("flowexport.stream")

#: Seconds between listings of the stream's shards (new children after a reshard, owners).
LIST_SECONDS = 30.0
#: Seconds between looks at which shards this process reads (replicas joining or leaving).
OWNERS_SECONDS = 1.0
#: Seconds between checks that the subscription filter feeding the stream is still the one
#: the stream was started with (deleted or replaced out of band: records would miss the
#: stream). DescribeSubscriptionFilters is 5 requests/s per account and region, shared.
FILTER_CHECK_SECONDS = 60.0
#: Unique flows of a window all open shards' checkpoints keep together (each an equal share,
#: at least 64): the same 16,384 a log group's checkpoint keeps, so a status holds at most
#: about twice 171 KiB of windows (the log group's and the shards').
WINDOW_FLOWS_TOTAL = MAX_CHECKPOINTED_FLOWS


@dataclass(frozen=True)
class Shard:
    """A shard as listed: its id, its parents (after a split or merge), whether it is closed."""

    shard_id: str
    parents: tuple[str, ...] = ()
    closed: bool = False


def list_shards(clients: AwsClients, stream_name: str) -> list[Shard]:
    """Every shard the stream still has (paged ListShards); blocking."""
    shards: list[Shard] = []
    kw: dict[str, Any] = {"StreamName": stream_name}
    while True:
        try:
            answer = clients.kinesis.list_shards(**kw)
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                raise AwsError(
                    f"Kinesis stream {stream_name} does not exist", Reason.STREAM_NOT_FOUND
                ) from None
            raise classify(exc, "kinesis", "ListShards") from None
        for item in answer.get("Shards", []):
            parents = tuple(
                str(item[key])
                for key in ("ParentShardId", "AdjacentParentShardId")
                if item.get(key)
            )
            closed = bool((item.get("SequenceNumberRange") or {}).get("EndingSequenceNumber"))
            shards.append(Shard(str(item["ShardId"]), parents, closed))
        token = answer.get("NextToken")
        if not token:
            return shards
        kw = {"NextToken": token}


@dataclass(frozen=True)
class ShardError:
    """Why reading a shard fails (noted in its checkpoint's entry)."""

    reason: Reason
    message: str


class ShardBook(Protocol):
    """Where shard checkpoints live, and which shards this process may read."""

    def progress(self, shard_id: str) -> Progress | None:
        """The shard's checkpoint for this stream start (another replica's included)."""
        ...

    def owns(self, shard_id: str) -> bool:
        """Whether this process reads the shard now."""
        ...

    async def save(self, shard_id: str, progress: Progress, millis_behind: int | None) -> None:
        """Record the shard's checkpoint (after the PCE accepted everything before it)."""
        ...

    async def lost(self, shard_id: str, message: str) -> None:
        """Report records the stream's retention trimmed before they were read."""
        ...

    async def failed(self, shard_id: str, error: ShardError | None) -> None:
        """Note that reading the shard fails (None: it reads again)."""
        ...

    def errors(self) -> dict[str, ShardError]:
        """Failures on shards other processes read, by shard id."""
        ...

    async def listed(self, shard_ids: set[str]) -> None:
        """The shards the stream has now (a book may tidy checkpoints of those gone)."""
        ...


def window_flows(open_shards: int) -> int:
    """Unique flows one shard's checkpoint keeps: its share of `WINDOW_FLOWS_TOTAL` (the
    status must stay small)."""
    return max(64, min(MAX_CHECKPOINTED_FLOWS, WINDOW_FLOWS_TOTAL // max(1, open_shards)))


class ShardRunner:
    """Runs the pipelines of the shards a `ShardBook` gives this process."""

    def __init__(
        self,
        spec: FlowExportSpec,
        stream: StreamSubscription,
        clients: AwsClients,
        pce: PCEClient,
        fmt: LogFormat,
        book: ShardBook,
        *,
        since_ms: int,
        report: Report | None = None,
        on_upload: Callable[[float], None] | None = None,
        prepare: Prepare | None = None,
        start_window: Window | None = None,
        list_seconds: float = LIST_SECONDS,
        records_limit: int = RECORDS_LIMIT,
        filter_check_seconds: float | None = None,
    ) -> None:
        self.spec, self.stream, self.clients, self.pce, self.fmt = spec, stream, clients, pce, fmt
        self.book = book
        self.since_ms = since_ms
        self.report = report
        self.on_upload = on_upload
        self.prepare = prepare
        self.start_window = start_window
        self.list_seconds = list_seconds
        self.records_limit = records_limit
        #: How often to check the subscription filter (None: never; the holder checks).
        self.filter_check_seconds = filter_check_seconds
        self.read_seconds = (
            spec.source.stream.read_interval_millis if spec.source.stream else 1000
        ) / 1000
        #: The pipelines of the shards read here, and the stop event of each.
        self.running: dict[str, tuple[asyncio.Task[None], asyncio.Event]] = {}
        self.shards: list[Shard] = []
        self._caught_up: set[str] = set()

    def pipeline(self, shard_id: str, open_shards: int) -> Pipeline:
        """The pipeline of one shard, from its checkpoint (or the stream start)."""
        reader = ShardReader(
            self.clients,
            self.stream.stream_name,
            shard_id,
            self.since_ms,
            self.stream.retention_hours,
            self.records_limit,
        )
        progress = self.book.progress(shard_id) or Progress(
            ShardCursor(shard_id), window=self.start_window
        )

        async def checkpoint(saved: Progress) -> None:
            while reader.lost:
                await self.book.lost(shard_id, reader.lost.pop(0))
            await self.book.save(shard_id, saved, reader.millis_behind)

        return pipeline_for(
            self.spec,
            reader,
            self.fmt,
            self.pce,
            progress,
            checkpoint,
            on_upload=self.on_upload,
            prepare=self.prepare,
            max_window_flows=window_flows(open_shards),
        )

    def ready(self, shards: list[Shard]) -> list[Shard]:
        """Shards to read now: owned here, not read to their end, parents (still listed) done."""
        listed = {s.shard_id for s in shards}
        found = []
        for shard in shards:
            progress = self.book.progress(shard.shard_id)
            if progress is not None and progress.cursor.ended:
                continue
            if not self.book.owns(shard.shard_id):
                continue
            if any(p in listed and not self._ended(p) for p in shard.parents):
                continue
            found.append(shard)
        return found

    def _ended(self, shard_id: str) -> bool:
        progress = self.book.progress(shard_id)
        return progress is not None and bool(progress.cursor.ended)

    async def run_once(self, stop: asyncio.Event) -> None:
        """Read every shard this process owns until caught up (closed ones to their end,
        then their children)."""
        done: set[str] = set()
        while not stop.is_set():
            self.shards = await off_loop(list_shards, self.clients, self.stream.stream_name)
            todo = [s for s in self.ready(self.shards) if s.shard_id not in done]
            if not todo:
                return
            for shard in todo:
                pipeline = self.pipeline(shard.shard_id, len(self.shards))
                await pipeline.run_once(stop)
                done.add(shard.shard_id)

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Start and stop shard pipelines as shards appear, end and change hands, until `stop`;
        a terminal failure of any shard stops them all and is raised. Shards are listed every
        `list_seconds`; who reads which is looked at every `OWNERS_SECONDS`."""
        failures = 0
        listed_at = float("-inf")
        checked_at = time.monotonic()  # the filter was just ensured
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                every = self.filter_check_seconds
                if every is not None and time.monotonic() - checked_at >= every:
                    checked_at = time.monotonic()
                    await self._check_filter()
                if time.monotonic() - listed_at >= self.list_seconds:
                    try:
                        self.shards = await off_loop(
                            list_shards, self.clients, self.stream.stream_name
                        )
                        failures, listed_at = 0, time.monotonic()
                    except FlowExportError as exc:
                        if not exc.retryable:
                            raise
                        failures += 1
                        await self._say(ConditionType.INGESTING, exc)
                        await _sleep(stop, min(300.0, self.list_seconds * 2**failures))
                        continue
                    await self.book.listed({s.shard_id for s in self.shards})
                    self._adjust()
                    if not self.running:
                        await self._caught_up_report()  # every shard is another replica's
                else:
                    self._adjust()
                self._raise_terminal()
                waiters = [t for t, _ in self.running.values() if not t.done()]
                await asyncio.wait(
                    [stopping, *waiters],
                    timeout=min(OWNERS_SECONDS, self.list_seconds),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                self._raise_terminal()
        finally:
            stopping.cancel()
            await self._stop_all()

    async def _check_filter(self) -> None:
        """Raise a retryable SubscriptionFilterChanged when the filter feeding the stream is
        gone or replaced (the holder then has it re-created and the gap read from the log
        group); a failure to look is retried at the next check."""
        group = self.spec.aws.log_group_name
        try:
            present = await off_loop(filter_in_place, self.clients, group, self.stream)
        except FlowExportError as exc:
            if not exc.retryable:
                raise
            log.info("cannot check subscription filter %s: %s", self.stream.filter_name, exc)
            return
        if not present:
            raise AwsError(
                f"subscription filter {self.stream.filter_name} on log group {group} was "
                f"deleted or replaced: re-creating it, and reading what Kinesis stream "
                f"{self.stream.stream_name} missed from the log group",
                Reason.SUBSCRIPTION_FILTER_CHANGED,
            )

    def _adjust(self) -> None:
        listed = {s.shard_id for s in self.shards}
        for shard_id in list(self.running):
            task, shard_stop = self.running[shard_id]
            if shard_id not in listed or not self.book.owns(shard_id):
                shard_stop.set()  # expired from the stream, or another replica's now
            if task.done() and task.exception() is None:
                del self.running[shard_id]
        for shard in self.ready(self.shards):
            if shard.shard_id not in self.running:
                self._start(shard.shard_id, len(self.shards))

    def _start(self, shard_id: str, open_shards: int) -> None:
        pipeline = self.pipeline(shard_id, open_shards)
        shard_stop = asyncio.Event()

        async def on_error(exc: FlowExportError) -> None:
            self._caught_up.discard(shard_id)
            await self.book.failed(shard_id, ShardError(exc.reason, str(exc)))
            await self._say(ConditionType.INGESTING, exc, f"shard {shard_id}: ")

        async def on_success() -> None:
            self._caught_up.add(shard_id)
            await self.book.failed(shard_id, None)
            if self._caught_up >= set(self.running):
                await self._caught_up_report()

        task = asyncio.create_task(
            pipeline.run_forever(shard_stop, self.read_seconds, on_error, on_success),
            name=f"shard {shard_id}",
        )
        self.running[shard_id] = (task, shard_stop)
        name = self.stream.stream_name
        log.info("reading shard %s of stream %s", shard_id, name)
        task.add_done_callback(
            lambda _: log.info("stopped reading shard %s of stream %s", shard_id, name)
        )

    async def _caught_up_report(self) -> None:
        """Ingesting: True when every shard read here caught up and no other process notes a
        failure on its own."""
        if self.report is None:
            return
        errors = self.book.errors()
        if errors:
            shard_id, error = sorted(errors.items())[0]
            await self.report(
                ConditionUpdate(
                    ConditionType.INGESTING,
                    False,
                    error.reason,
                    f"shard {shard_id}: {error.message}",
                )
            )
            return
        here = len(self.running)
        await self.report(
            ConditionUpdate(
                ConditionType.INGESTING,
                True,
                Reason.INGESTING,
                f"caught up with Kinesis stream {self.stream.stream_name} ({len(self.shards)} "
                f"shard(s), {here} read by this replica)",
            )
        )

    def _raise_terminal(self) -> None:
        for task, _ in self.running.values():
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def _say(self, stage: ConditionType, exc: FlowExportError, prefix: str = "") -> None:
        if self.report is not None:
            message = f"retrying: {prefix}{exc}" if exc.retryable else f"{prefix}{exc}"
            await self.report(ConditionUpdate(stage, False, exc.reason, message))

    async def _stop_all(self) -> None:
        for _, shard_stop in self.running.values():
            shard_stop.set()
        tasks = [t for t, _ in self.running.values()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.running.clear()


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


def poll_cursor_after_stream(
    since_ms: int, shards: dict[str, Progress], margin_ms: int
) -> tuple[int, Window | None]:
    """Where polling resumes after mode stream: the earliest arrival checkpointed on a shard
    not read to its end (or the stream's start), less `margin_ms` for delivery into the
    stream; and the newest window the shards uploaded in (so what the margin re-reads is not
    uploaded again in it)."""
    open_arrivals = [
        p.cursor.arrived_ms if p.cursor.arrived_ms is not None else since_ms
        for p in shards.values()
        if not p.cursor.ended
    ]
    resume = min(
        open_arrivals, default=max([since_ms, *(p.cursor.arrived_ms or 0 for p in shards.values())])
    )
    windows = [p.window for p in shards.values() if p.window is not None]
    window = None
    if windows:
        newest = max(w.start_ms for w in windows)
        window = Window(newest)
        window = window.with_flows(
            (d for w in windows if w.start_ms == newest for d in sorted(w.flows())),
        )
    return max(0, resume - margin_ms), window


def shard_progress(entry: Any, since: Any) -> Progress | None:
    """A shard's checkpoint from its status entry, if it belongs to the stream start `since`
    (entries of an earlier switch to mode stream are not resumed)."""
    if not isinstance(entry, dict) or entry.get("since") != since:
        return None
    try:
        return Progress.from_state(entry, ShardCursor.from_status)
    except ValueError:
        return None


class MemoryShardBook:
    """Shard checkpoints in memory (`flowexport sync`, tests): every shard is this process's."""

    def __init__(self, shards: dict[str, Progress] | None = None) -> None:
        self.shards: dict[str, Progress] = dict(shards or {})
        self.behind: dict[str, int | None] = {}
        self.gaps: list[str] = []
        self.failures: dict[str, ShardError] = {}

    def progress(self, shard_id: str) -> Progress | None:
        """The shard's last checkpoint."""
        return self.shards.get(shard_id)

    def owns(self, shard_id: str) -> bool:
        """Every shard."""
        return True

    async def save(self, shard_id: str, progress: Progress, millis_behind: int | None) -> None:
        """Keep a copy of the checkpoint."""
        self.shards[shard_id] = copy.deepcopy(progress)
        self.behind[shard_id] = millis_behind

    async def lost(self, shard_id: str, message: str) -> None:
        """Keep the report."""
        self.gaps.append(message)

    async def failed(self, shard_id: str, error: ShardError | None) -> None:
        """Keep the shard's current failure."""
        if error is None:
            self.failures.pop(shard_id, None)
        else:
            self.failures[shard_id] = error

    def errors(self) -> dict[str, ShardError]:
        """None: every shard is read here."""
        return {}

    async def listed(self, shard_ids: set[str]) -> None:
        """Nothing to tidy."""
