"""Mode s3: flow-log objects in S3, announced by the bucket's notifications on an SQS queue.

Every message is received with long polling and hidden while its objects are read; its
visibility is extended every third of its visibility timeout (`configure`), so a slow PCE
never hands it to another replica. An object is read in bounded memory (gzip text streamed,
its header line giving the format; Parquet through ranged GETs, a batch of rows at a time
through the columnar core) by its own `Pipeline` over the log group's progress (the counts and
the aggregation window go on from object to object; the log group's cursor is left as it is).
A message is deleted only once every flow of its objects was accepted by the PCE and the
objects were recorded as done.

- Stopping (SIGTERM) in the middle of an object: what was read is uploaded and checkpointed,
  and the message is made visible again at once (ChangeMessageVisibility 0).
- An object that cannot be read (corrupt gzip or Parquet, 403, 404) is reported (Ingesting
  False ObjectUnreadable, a Warning Event naming its key) and its message left to the queue's
  redrive policy; the other messages go on.
- The same object (ETag and key) announced again is skipped once done (the last
  `DONE_OBJECTS` are kept in status.source.doneObjects); read again before that (a crash
  between upload and delete), its flows are in the window and are not uploaded twice.
- Replicas: every replica reads the queue (`share`); no Leases for the queue. A replica not
  holding the FlowExport checkpoints its counts and window in a status.shards entry of its own
  (`replica_part`) of the start `status.source.since` (0 for a new FlowExport), which the
  holder keeps and adds into status.counts (it opens the start's book for that).

Switching with poll or stream (the flow log's S3 delivery and the log group's are two
deliveries of the same VPC's records; the log group's cursor counts CloudWatch Logs' ingestion
time, which comes after a record's end):
- Entering s3 from poll/stream (`begin`): `status.source.since` = the log group's cursor less
  `SWITCH_MARGIN_MS`. Records whose end (else start) is before it are dropped, counted in
  `recordsSkipped.before_switch` (the mode before read them); an object whose key timestamp
  says every record ended before it (stamp + 10 min <= since) is not read (`objectsSkipped`).
- In s3, the log group's cursor follows the objects done: the newest key timestamp less
  `SWITCH_MARGIN_MS` (never backwards).
- Leaving s3 for poll/stream: the log group is read from that cursor (as any mode resumes it).
- What the margins read twice (records in both deliveries within 10 minutes of the switch) is
  in the window carried across the switch: not uploaded twice within
  `aggregationWindowSeconds`. A record CloudWatch Logs ingested more than 10 minutes after it
  ended, or an object S3 delivered more than 10 minutes after its interval, at the switch,
  can be missed. A format without `end`/`start` (Parquet or text) is cut by key timestamp only.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flowexport.api.conditions import ConditionType, ConditionUpdate, Report, failed
from flowexport.api.models import AwsSpec, FlowExportSpec, S3Spec, SourceSpec, SourceStatus
from flowexport.aws.blocking import off_loop, until_stopped
from flowexport.aws.kinesis_reader import ShardCursor
from flowexport.aws.reader import ReaderCursor
from flowexport.aws.s3 import (
    ObjectCursor,
    ObjectReader,
    ObjectRef,
    ObjectUnreadableError,
    S3Subscription,
    announced,
    delete_message,
    ensure_s3_source,
    flow_log_key,
    hide_message,
    message_age,
    receive,
    remove_s3_source,
)
from flowexport.aws.session import AwsClients
from flowexport.aws.subscription import Subscription
from flowexport.errors import ConfigError, FlowExportError, Reason
from flowexport.pce.client import PCEClient
from flowexport.pipeline import Checkpoint, Prepare, Progress, pipeline_for
from flowexport.sources.base import Reading, Share, Source, SourceStore
from flowexport.sources.shards import ShardBook

log = logging.getLogger("flowexport.s3")

#: Seconds a received message stays hidden (the default of `flowexport run
#: --s3-visibility-seconds`, env `ENV_VISIBILITY`): a SIGKILLed replica's message comes back
#: after this; extended every `EXTEND_SHARE` of it while its objects are read.
VISIBILITY_SECONDS = 120
EXTEND_SHARE = 1 / 3
EXTEND_SECONDS = VISIBILITY_SECONDS * EXTEND_SHARE
#: The environment variable that sets the visibility timeout (the flag wins).
ENV_VISIBILITY = "FLOWEXPORT_S3_VISIBILITY_SECONDS"
#: The shortest visibility timeout allowed (extensions at a third of it: 1 s); SQS's longest.
MIN_VISIBILITY_SECONDS = 3
MAX_VISIBILITY_SECONDS = 43_200
#: Long polling: 5 s (the SQS maximum is 20), so a stop waits at most that for the receive in
#: flight, whose messages are then made visible again at once; with `once`, a short wait tells
#: an empty queue.
WAIT_SECONDS = 5
ONCE_WAIT_SECONDS = 1
#: Messages taken per receive: one, so each replica takes what it reads next and no message
#: waits hidden behind others without its visibility extended (another replica takes it).
RECEIVE_LIMIT = 1
#: Objects recorded as done (ETag and key), newest last.
DONE_OBJECTS = 256
#: Ingesting while every object received so far was read.
QUEUE_CAUGHT_UP = ConditionUpdate(
    ConditionType.INGESTING, True, Reason.INGESTING, "caught up with the queue's objects"
)
#: Longest backoff after a failure of the queue or the PCE.
MAX_BACKOFF_SECONDS = 300.0
#: How far a switch into or out of mode s3 reads back: CloudWatch Logs' and S3's delivery
#: delays (AWS: about 10 minutes, best effort).
SWITCH_MARGIN_MS = 10 * 60_000


#: The visibility timeout `configure` set (empty: not set).
_visibility: list[int] = []


def configure(visibility_seconds: int | None = None) -> int:
    """Set the process's visibility timeout for the messages it receives (before any
    FlowExport reads); None: `ENV_VISIBILITY` if set, else `VISIBILITY_SECONDS`. Returns it;
    a value outside `MIN_VISIBILITY_SECONDS`..`MAX_VISIBILITY_SECONDS` is a ValueError."""
    if visibility_seconds is None:
        given = os.environ.get(ENV_VISIBILITY, "").strip()
        try:
            visibility_seconds = int(given) if given else VISIBILITY_SECONDS
        except ValueError:
            raise ValueError(f"{ENV_VISIBILITY} must be a whole number of seconds") from None
    if not MIN_VISIBILITY_SECONDS <= visibility_seconds <= MAX_VISIBILITY_SECONDS:
        raise ValueError(
            f"the visibility timeout must be {MIN_VISIBILITY_SECONDS}..{MAX_VISIBILITY_SECONDS} s"
        )
    _visibility[:] = [visibility_seconds]
    return visibility_seconds


def configured_visibility() -> int:
    """The visibility timeout configured (`configure`), else `VISIBILITY_SECONDS`."""
    return _visibility[0] if _visibility else VISIBILITY_SECONDS


@dataclass(frozen=True)
class S3Target:
    """What a replica reads: the bucket, its prefix, the queue, and the flow log whose objects
    are read (None: every flow-log object under the prefix)."""

    bucket: str
    prefix: str
    queue_url: str
    flow_log_id: str | None = None
    #: Records that ended before this (epoch ms) were read by the mode before (a switch).
    since: int | None = None


@dataclass
class Tally:
    """What this process did with the queue's announcements."""

    done: int = 0
    in_flight: int = 0
    failed: int = 0
    skipped: int = 0
    lag: int | None = None
    #: The objects that could not be read in this run (key -> why), for `once`.
    unreadable: dict[str, str] = field(default_factory=dict)


class S3Runner:
    """Reads the queue's objects until stopped (or, with `once`, until the queue is empty)."""

    def __init__(
        self,
        spec: FlowExportSpec,
        target: S3Target,
        clients: AwsClients,
        pce: PCEClient,
        progress: Progress,
        checkpoint: Checkpoint,
        *,
        report: Report,
        announce: Callable[..., None] | None = None,
        on_status: Callable[[S3Runner], None] | None = None,
        done: list[str] | None = None,
        on_upload: Callable[[float], None] | None = None,
        prepare: Prepare | None = None,
        visibility_seconds: int | None = None,
        extend_seconds: float | None = None,
        wait_seconds: int = WAIT_SECONDS,
    ) -> None:
        self.spec, self.target, self.clients, self.pce = spec, target, clients, pce
        self.progress, self.checkpoint = progress, checkpoint
        self.report, self.announce, self.on_status = report, announce, on_status
        self.on_upload, self.prepare = on_upload, prepare
        self.visibility = visibility_seconds or configured_visibility()
        self.extend = extend_seconds or self.visibility * EXTEND_SHARE
        self.wait = wait_seconds
        self.done: deque[str] = deque(done or [], maxlen=DONE_OBJECTS)
        self.tally = Tally()

    async def run(self, stop: asyncio.Event, *, once: bool = False) -> None:
        """Receive and handle messages until `stop` (with `once`: until none is left).
        Retryable failures back off; terminal ones are raised."""
        failures = 0
        wait = ONCE_WAIT_SECONDS if once else self.wait
        while not stop.is_set():
            try:
                messages = await self._receive(wait, stop)
                if stop.is_set():
                    await self._release(messages)
                    break
                self._lag_of(messages)
                if not messages:
                    if once:
                        break
                    continue
                before = self.tally.failed
                for i, message in enumerate(messages):
                    if stop.is_set():  # the rest of the receive: visible again at once
                        await self._release(messages[i:])
                        break
                    await self._handle(message, stop)
                failures = 0
                if self.tally.failed == before:
                    await self.report(QUEUE_CAUGHT_UP)
            except FlowExportError as exc:
                if not exc.retryable:
                    raise
                failures += 1
                await self.report(failed(ConditionType.INGESTING, exc))
                delay = min(MAX_BACKOFF_SECONDS, 2.0 ** min(failures, 8))
                log.warning("mode s3: %s; retrying in %.0fs", exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
        if once and self.tally.unreadable:
            names = "; ".join(f"{k}: {why}" for k, why in sorted(self.tally.unreadable.items()))
            raise FlowExportError(
                f"{len(self.tally.unreadable)} object(s) could not be read: {names}",
                Reason.OBJECT_UNREADABLE,
            )

    async def _receive(self, wait: int, stop: asyncio.Event) -> list[dict[str, Any]]:
        """One long poll. A stop does not abandon it: the messages it brings back after a
        stop are made visible again at once (`_release`) instead of staying hidden for the
        visibility timeout; it ends within `wait` seconds."""
        receiving = asyncio.ensure_future(
            off_loop(
                receive, self.clients, self.target.queue_url, wait, self.visibility, RECEIVE_LIMIT
            )
        )
        await until_stopped(asyncio.shield(receiving), stop)
        return await receiving

    async def _release(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            with contextlib.suppress(FlowExportError):
                receipt = str(message["ReceiptHandle"])
                await off_loop(hide_message, self.clients, self.target.queue_url, receipt, 0)

    def _lag_of(self, messages: list[dict[str, Any]]) -> None:
        """The age of the oldest message received (0: the queue had none to give)."""
        now = int(time.time() * 1000)
        ages = [a for m in messages if (a := message_age(m, now)) is not None]
        self.tally.lag = max(ages) if ages else 0 if not messages else self.tally.lag
        self._status()

    def _status(self) -> None:
        if self.on_status is not None:
            self.on_status(self)

    async def _handle(self, message: dict[str, Any], stop: asyncio.Event) -> None:
        """Read the objects of one message; delete it when all were accepted, make it visible
        at once when stopped, leave it to the redrive policy when one could not be read."""
        receipt = str(message["ReceiptHandle"])
        found = announced(str(message.get("Body") or ""))
        self.tally.skipped += found.test_events + found.not_events
        complete, unreadable = True, False
        extending = asyncio.create_task(self._keep_hidden(receipt))
        try:
            for ref in found.objects:
                if not self._wanted(ref):
                    self.tally.skipped += 1
                    continue
                reader = ObjectReader(self.clients, ref, int(time.time() * 1000), self.target.since)
                if reader.before_since:  # the mode before the switch read its records
                    self.tally.skipped += 1
                    continue
                try:
                    finished = await self._object(reader, stop)
                except ObjectUnreadableError as exc:
                    unreadable = True
                    self._unreadable(exc)
                    continue
                if not finished:
                    complete = False
                    break
                self.done.append(ref.done_id)
                self.tally.done += 1
                self._status()
                await self.checkpoint(self.progress)  # the done object is stored before delete
        except BaseException:
            complete = False
            raise
        finally:
            extending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await extending
            if not complete:
                # Stopped (or failed) in the middle: another reader may take it at once.
                with contextlib.suppress(FlowExportError):
                    await off_loop(hide_message, self.clients, self.target.queue_url, receipt, 0)
        if complete and not unreadable:
            await off_loop(delete_message, self.clients, self.target.queue_url, receipt)

    def _wanted(self, ref: ObjectRef) -> bool:
        key = flow_log_key(ref.key, self.target.prefix)
        if key is None or ref.bucket != self.target.bucket:
            return False
        if self.target.flow_log_id is not None and key.flow_log_id != self.target.flow_log_id:
            return False
        return ref.done_id not in self.done

    def _unreadable(self, exc: ObjectUnreadableError) -> None:
        self.tally.failed += 1
        self.tally.unreadable[exc.ref.key] = exc.why
        log.warning("%s", exc)
        if self.announce is not None:
            self.announce(
                str(Reason.OBJECT_UNREADABLE),
                f"{exc}; left to the queue's redrive policy",
                warning=True,
                part=exc.ref.key,
            )
        self._status()
        task = asyncio.ensure_future(self.report(failed(ConditionType.INGESTING, exc)))
        task.add_done_callback(lambda t: t.exception())

    async def _keep_hidden(self, receipt: str) -> None:
        """Extend the message's visibility while its objects are read."""
        while True:
            await asyncio.sleep(self.extend)
            try:
                await off_loop(
                    hide_message, self.clients, self.target.queue_url, receipt, self.visibility
                )
            except FlowExportError as exc:
                log.warning("could not extend a message's visibility: %s", exc)

    async def _object(self, reader: ObjectReader, stop: asyncio.Event) -> bool:
        """Read one object through a pipeline; whether it was read to its end and all its flows
        accepted. Raises ObjectUnreadableError, or the PCE's failure."""
        self.tally.in_flight += 1
        base = self.progress.cursor
        try:
            fmt = await off_loop(reader.open)
            pipeline = pipeline_for(
                self.spec,
                reader,
                fmt,
                self.pce,
                self.progress,
                self.checkpoint,
                on_upload=self.on_upload,
                prepare=self.prepare,
            )
            try:
                await pipeline.run_once(stop)
            finally:
                self.progress = pipeline.progress
                reached = self.progress.cursor
                self.progress.cursor = base  # the log group's cursor, not the object's
            # Read to its end and its last chunk checkpointed (not abandoned on a stop).
            finished = reader.final is not None and reached == reader.final
            if finished:
                self.progress.cursor = _followed(base, reader.stamp_ms)
            return finished
        finally:
            self.tally.in_flight -= 1


class S3Source(Source):
    """Reads flow-log objects the bucket's notifications announce on a queue."""

    mode = "s3"
    reads_log_group = False

    # -- AWS ---------------------------------------------------------------------------------

    def ensure(
        self, clients: AwsClients, aws: AwsSpec, owner: str, spec: SourceSpec, sub: Subscription
    ) -> None:
        """The bucket, the VPC's flow log into it (with vpcId), the queue and notification."""
        s3 = _settings(spec)
        found = ensure_s3_source(clients, aws, s3, owner)
        sub.changes += found.changes
        sub.s3 = found
        if found.flow_log_id is not None:
            sub.flow_log_id, sub.flow_log_owned = found.flow_log_id, found.flow_log_owned

    def remove(self, clients: AwsClients, aws: AwsSpec, owner: str, spec: SourceSpec) -> list[str]:
        """The notification, queues and flow log this FlowExport created."""
        return remove_s3_source(clients, aws, _settings(spec), owner)

    def describe(self, sub: Subscription) -> str:
        """The bucket and the queue, and whether this FlowExport made the queue."""
        found = sub.s3
        if found is None:
            return ""
        how = "created by" if found.queue_owned else "adopted by"
        return (
            f"; bucket {found.bucket} announces its objects on queue {found.queue_url} "
            f"({how} this FlowExport)"
        )

    # -- reading -----------------------------------------------------------------------------

    def continues(self, stored: SourceStatus, sub: Subscription) -> bool:
        """The same bucket and queue."""
        found = sub.s3
        return (
            stored.mode == self.mode
            and found is not None
            and stored.bucket == found.bucket
            and stored.queue_url == found.queue_url
        )

    async def begin(self, store: SourceStore, progress: Progress) -> None:
        """Taking over from poll or stream: records that ended before the log group's cursor
        less `SWITCH_MARGIN_MS` were read by them (status.source.since); from another queue or
        bucket, the since of before; new, none (the queue holds what is to be read)."""
        stored = store.stored()
        since = 0  # nothing before: every record the queue announces
        if stored is not None and stored.mode == self.mode:
            since = stored.since or 0
        elif stored is not None and isinstance(progress.cursor, ReaderCursor):
            since = max(0, progress.cursor.ingested_through - SWITCH_MARGIN_MS)
        await store.switch(SourceStatus(mode=self.mode, since=since), progress)

    async def read(self, reading: Reading) -> None:
        """Read the queue until stopped (with `once`, until it is empty)."""
        found = reading.subscription.s3
        s3 = reading.spec.source.s3
        if found is None or s3 is None:
            raise ConfigError("mode s3 without its bucket and queue", Reason.INTERNAL_ERROR)
        store = reading.store
        stored = store.stored()
        mine = stored is not None and stored.mode == self.mode
        done = stored.done_objects if stored is not None and mine else None
        since = (stored.since if stored is not None and mine else None) or 0
        target = S3Target(found.bucket, s3.prefix, found.queue_url, found.flow_log_id, since)
        if store.shared:
            # The other replicas' entries (their counts: `read_share`) belong to this start.
            store.book(since)
        pipeline = reading.pipeline

        def on_status(runner: S3Runner) -> None:
            store.keep(_status_of(target, runner, store.shared))

        runner = S3Runner(
            reading.spec,
            target,
            reading.clients,
            reading.pce,
            pipeline.progress,
            pipeline.checkpoint,
            report=reading.report,
            announce=store.announce,
            on_status=on_status,
            done=list(done or []),
            on_upload=reading.on_upload,
            prepare=pipeline.prepare,
        )
        if stored is None or stored.mode != self.mode or stored.queue_url != found.queue_url:
            await store.switch(_status_of(target, runner, store.shared), pipeline.progress)
        try:
            await runner.run(reading.stop, once=reading.once)
        finally:
            pipeline.progress = runner.progress
        if reading.once:
            await reading.report(QUEUE_CAUGHT_UP)

    def share(self, spec: FlowExportSpec, stored: SourceStatus | None) -> Share | None:
        """Every replica reads the queue the holder's status names."""
        if stored is None or stored.mode != self.mode or stored.shared is not True:
            return None
        if stored.bucket is None or stored.queue_url is None or spec.source.s3 is None:
            return None
        since = stored.since or 0
        target = S3Target(stored.bucket, spec.source.s3.prefix, stored.queue_url, since=since)
        return Share(self, since, target)

    async def read_share(
        self,
        share: Share,
        spec: FlowExportSpec,
        clients: AwsClients,
        pce: PCEClient,
        book: ShardBook,
        *,
        stop: asyncio.Event,
        report: Report,
        on_upload: Callable[[float], None] | None = None,
    ) -> None:
        """Read the queue beside the holder. This replica's counts and window are checkpointed
        in a `status.shards` entry of its own (`replica_part`; the holder adds every entry's
        counts into status.counts, as for mode stream's shards), resumed after a restart."""
        part = replica_part(book)
        progress: Progress | None = book.progress(part) if part is not None else None
        if progress is None:
            progress = Progress(ShardCursor(part or "s3"))
        # The entry's counts from before, when the part is known only at a later checkpoint
        # (the replicas' Leases give a part only after their hand-over delay).
        carried: list[Progress] = []

        async def checkpoint(progress: Progress) -> None:
            nonlocal part
            if part is None:
                part = replica_part(book)
                if part is None:
                    return
                carried.extend(p for p in [book.progress(part)] if p is not None)
            saved = copy.deepcopy(progress)  # the entry's cursor, not the object's progress
            if isinstance(saved.cursor, ObjectCursor):
                saved.cursor = saved.cursor.base
            for before in carried:
                saved.add_counts(before)
            log.debug("mode s3: this replica's counts in status.shards[%s]", part)
            await book.save(part, saved, None)

        runner = S3Runner(
            spec,
            share.target,
            clients,
            pce,
            progress,
            checkpoint,
            report=report,
            on_upload=on_upload,
        )
        await runner.run(stop)


#: The status.shards entries the replicas not holding a FlowExport in mode s3 may use.
REPLICA_PARTS = 64


def replica_part(book: ShardBook) -> str | None:
    """The status.shards entry this replica keeps its counts in: the first `s3-<n>` the
    book gives it (the replicas' Leases spread the names; the same one after a restart while
    the replicas stay the same). None when none is this replica's yet (asked again at the next
    checkpoint; the counts wait in memory)."""
    return next((f"s3-{n}" for n in range(REPLICA_PARTS) if book.owns(f"s3-{n}")), None)


def _settings(spec: SourceSpec) -> S3Spec:
    if spec.s3 is None:
        raise ConfigError("mode s3 needs source.s3 (at least bucket)", Reason.INVALID_SPEC)
    return spec.s3


def _followed(cursor: Any, stamp_ms: int | None) -> Any:
    """The log group's cursor once an object with this key timestamp is done: moved to the
    timestamp less `SWITCH_MARGIN_MS` (where polling would resume), never backwards, never
    past now less the margin (a key stamped in the future)."""
    if stamp_ms is None or not isinstance(cursor, ReaderCursor):
        return cursor
    reached = min(stamp_ms, int(time.time() * 1000)) - SWITCH_MARGIN_MS
    if reached <= cursor.ingested_through:
        return cursor
    return ReaderCursor(reached, log_group=cursor.log_group)


def _status_of(target: S3Target, runner: S3Runner, shared: bool) -> SourceStatus:
    tally = runner.tally
    return SourceStatus(
        mode="s3",
        since=target.since,
        shared=shared,
        bucket=target.bucket,
        queue_url=target.queue_url,
        objects_done=tally.done,
        objects_in_flight=tally.in_flight,
        objects_failed=tally.failed,
        objects_skipped=tally.skipped,
        oldest_message_age_seconds=tally.lag,
        done_objects=list(runner.done),
    )


__all__ = ["S3Runner", "S3Source", "S3Subscription", "S3Target"]
