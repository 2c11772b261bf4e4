"""Mode stream: a subscription filter delivers the log group to a Kinesis stream, read shard
by shard (`shards.py`), each shard with its own checkpoint.

Starting (from poll, or from another stream) leaves no gap: the log group is polled up to the
filter's creation, from when on the stream has every record, and the point reached is the
stream's start (`status.source.since`); shard checkpoints of another start are never resumed.
Leaving for another mode resumes the log group at the earliest shard checkpoint, less the
delivery margin, with the shards' newest window (so what is read twice is not uploaded twice).

With several replicas (`SourceStore.shared`), every replica reads its share of the shards of
a FlowExport another replica holds (`share`), from what the holder's status.source says.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from flowexport.api.conditions import ConditionType, Report, caught_up, failed
from flowexport.api.models import AwsSpec, FlowExportSpec, SourceSpec, SourceStatus
from flowexport.aws.reader import ReaderCursor
from flowexport.aws.session import AwsClients
from flowexport.aws.stream import (
    StreamSubscription,
    deleted_filter,
    ensure_stream_subscription,
    remove_stream_subscription,
)
from flowexport.aws.subscription import Subscription
from flowexport.core.logformat import LogFormat, LogFormatError
from flowexport.errors import ConfigError, FlowExportError, Reason
from flowexport.pce.client import PCEClient
from flowexport.pipeline import Pipeline, Progress
from flowexport.sources.base import Reading, Share, Source, SourceStore
from flowexport.sources.shards import (
    FILTER_CHECK_SECONDS,
    ShardBook,
    ShardRunner,
    poll_cursor_after_stream,
    shard_progress,
)

log = logging.getLogger("flowexport.stream")

#: How much polling re-reads before the earliest shard checkpoint when the mode leaves stream
#: (records reach the stream up to this long after CloudWatch Logs ingested them).
STREAM_DELIVERY_MARGIN_MS = 60_000
#: The longest wait between the slices that poll the log group up to the stream's start.
DRAIN_POLL_SECONDS = 5.0


@dataclass(frozen=True)
class StreamTarget:
    """What a replica needs to read shards of a stream: the stream and the records' format."""

    stream: StreamSubscription
    log_format: LogFormat


def source_status(
    stream: StreamSubscription, since: int, log_format: LogFormat, shared: bool
) -> SourceStatus:
    """status.source in mode stream: what the other replicas need to read shards."""
    return SourceStatus(
        mode=StreamSource.mode,
        shared=shared,
        stream_arn=stream.stream_arn,
        stream_name=stream.stream_name,
        subscription_filter=stream.filter_name,
        subscription_filter_created=stream.filter_since_ms,
        retention_hours=stream.retention_hours,
        log_format=log_format.render(),
        since=since,
    )


def target_of(stored: SourceStatus) -> StreamTarget | None:
    """The stream and format a stored mode-stream status names (None if it lacks them:
    written by a version that did not record them)."""
    if stored.stream_arn is None or stored.stream_name is None or stored.since is None:
        return None
    if stored.retention_hours is None or stored.log_format is None:
        return None
    try:
        log_format = LogFormat.parse(stored.log_format)
    except LogFormatError:
        return None
    stream = StreamSubscription(
        stream_arn=stored.stream_arn,
        stream_name=stored.stream_name,
        filter_name=stored.subscription_filter or "",
        filter_since_ms=stored.since,
        retention_hours=stored.retention_hours,
        stream_owned=False,
        filter_owned=False,
    )
    return StreamTarget(stream, log_format)


class StreamSource(Source):
    """Reads a Kinesis stream the log group is subscribed to."""

    mode = "stream"

    # -- AWS ---------------------------------------------------------------------------------

    def ensure(
        self, clients: AwsClients, aws: AwsSpec, owner: str, spec: SourceSpec, sub: Subscription
    ) -> None:
        """The stream (created or adopted) and the subscription filter delivering to it."""
        if spec.stream is None:
            raise ConfigError("mode stream needs source.stream", Reason.INVALID_SPEC)
        stream = ensure_stream_subscription(
            clients, aws, spec.stream, owner, sub.filters, sub.log_group_owner
        )
        sub.changes += stream.changes
        sub.other_filters.pop(stream.filter_name, None)
        sub.stream = stream

    def release(
        self, clients: AwsClients, aws: AwsSpec, owner: str, spec: SourceSpec, sub: Subscription
    ) -> None:
        """This FlowExport's filters into Kinesis (and the streams it created) go; others'
        stay (`remove_stream_subscription` tells them apart by name and tag)."""
        into_kinesis = [n for n, into in sub.other_filters.items() if ":kinesis:" in into]
        if into_kinesis and aws.management_policy != "Observe":
            removed = remove_stream_subscription(clients, aws, spec.stream, owner)
            sub.changes += removed
            for name in into_kinesis:
                if deleted_filter(name) in removed:
                    sub.other_filters.pop(name, None)

    def remove(self, clients: AwsClients, aws: AwsSpec, owner: str, spec: SourceSpec) -> list[str]:
        """The filter and the stream this FlowExport created."""
        return remove_stream_subscription(clients, aws, spec.stream, owner)

    def describe(self, sub: Subscription) -> str:
        """The filter and the stream, and whether this FlowExport made them."""
        stream = sub.stream
        if stream is None:
            return ""
        return (
            f"; subscription filter {stream.filter_name} "
            f"({'created by' if stream.filter_owned else 'adopted by'} this FlowExport) "
            f"delivers to Kinesis stream {stream.stream_name} "
            f"({'created by' if stream.stream_owned else 'adopted by'} this FlowExport)"
        )

    # -- reading -----------------------------------------------------------------------------

    def continues(self, stored: SourceStatus, sub: Subscription) -> bool:
        """The same stream (by ARN) was being read, fed by the same subscription filter: one
        deleted and re-created (out of band) missed records, which the log group has."""
        stream = sub.stream
        if stored.mode != self.mode or stream is None or stored.stream_arn != stream.stream_arn:
            return False
        created = stored.subscription_filter_created
        if created is None:  # written before it was recorded: the start is after the filter
            return stored.since is None or stored.since >= stream.filter_since_ms
        return created == stream.filter_since_ms

    async def hand_back(
        self, store: SourceStore, stored: SourceStatus, progress: Progress
    ) -> Progress:
        """Resume the log group where the earliest open shard checkpoint is (less the
        delivery margin), the shards' counts folded in, their newest window kept."""
        since = stored.since or 0
        shards = {
            shard_id: p
            for shard_id, entry in store.parts().items()
            if (p := shard_progress(entry, since)) is not None
        }
        resume, window = poll_cursor_after_stream(since, shards, STREAM_DELIVERY_MARGIN_MS)
        log_group = getattr(progress.cursor, "log_group", None)
        progress.cursor = ReaderCursor(resume, log_group=log_group)
        progress.window = window
        for p in shards.values():
            progress.add_counts(p)
        log.info(
            "leaving Kinesis stream %s: the log group resumes at %d", stored.stream_name, resume
        )
        await store.switch(SourceStatus(mode="poll"), progress)
        return progress

    async def begin(self, store: SourceStore, progress: Progress) -> None:
        """Nothing before the log group is drained (`read` records the stream's start)."""

    async def read(self, reading: Reading) -> None:
        """Resume the shards of the stream start in store, or poll the log group up to the
        filter's creation and start the stream there; then read the shards."""
        stream = reading.subscription.stream
        if stream is None:
            raise ConfigError("mode stream without a stream subscription", Reason.INTERNAL_ERROR)
        store, fmt = reading.store, reading.subscription.log_format
        stored = store.stored()
        since = (
            stored.since
            if stored is not None and self.continues(stored, reading.subscription)
            else None
        )
        book = store.book(since)
        window = None
        if since is not None:
            store.keep(source_status(stream, since, fmt, store.shared))
        else:
            pipeline = reading.pipeline
            await _drain(pipeline, stream.filter_since_ms, reading)
            if reading.stop.is_set():
                return
            since = int(pipeline.progress.cursor.ingested_through)
            window = pipeline.progress.window
            await store.switch(source_status(stream, since, fmt, store.shared), pipeline.progress)
            book = store.book(since)
            store.announce(
                "StreamStarted",
                f"log group read up to the subscription filter's creation; reading Kinesis "
                f"stream {stream.stream_name} from here",
            )
            log.info(
                "%s: log group polled up to the stream's start; reading the stream",
                stream.stream_name,
            )
        runner = ShardRunner(
            reading.spec,
            stream,
            reading.clients,
            reading.pce,
            fmt,
            book,
            since_ms=since,
            report=reading.report,
            on_upload=reading.on_upload,
            prepare=reading.pipeline.prepare,
            start_window=window,
            filter_check_seconds=FILTER_CHECK_SECONDS,
        )
        if reading.once:
            await runner.run_once(reading.stop)
            await reading.report(caught_up())
        else:
            await runner.run_forever(reading.stop)

    def share(self, spec: FlowExportSpec, stored: SourceStatus | None) -> Share | None:
        """The shards of the stream the holder's status names, when it shares them."""
        if stored is None or stored.mode != self.mode or stored.shared is not True:
            return None  # not started, or the holder reads every shard
        target = target_of(stored)
        return None if target is None else Share(self, target.stream.filter_since_ms, target)

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
        """Read the shards `book` gives this replica until `stop`."""
        target: StreamTarget = share.target
        runner = ShardRunner(
            spec,
            target.stream,
            clients,
            pce,
            target.log_format,
            book,
            since_ms=share.since,
            report=report,
            on_upload=on_upload,
        )
        await runner.run_forever(stop)


async def _drain(pipeline: Pipeline, until_ms: int, reading: Reading) -> None:
    """Poll the log group until every event ingested up to `until_ms` was read (the filter's
    creation: later ones are in the stream); retryable failures back off."""

    def reached(progress: Progress) -> bool:
        cursor = progress.cursor
        return bool(cursor.slice_end is None and cursor.ingested_through >= until_ms)

    async def on_error(exc: FlowExportError) -> None:
        await reading.report(failed(ConditionType.INGESTING, exc))

    # Slices at most DRAIN_POLL_SECONDS apart: the stream waits for this.
    poll = min(float(reading.spec.ingestion.poll_interval_seconds), DRAIN_POLL_SECONDS)
    await pipeline.run_forever(reading.stop, poll, on_error, until=reached)
