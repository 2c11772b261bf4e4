"""The source seam's take-over rules (`flowexport.sources.take_over`), through an in-memory
`SourceStore`: which mode the stored status was in decides where the log group resumes."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from flowexport.api.models import FlowExportSpec, SourceStatus
from flowexport.aws.kinesis_reader import ShardCursor
from flowexport.aws.reader import ReaderCursor
from flowexport.aws.stream import StreamSubscription
from flowexport.aws.subscription import Subscription
from flowexport.core.logformat import PIPELINE_FORMAT
from flowexport.pipeline import Progress
from flowexport.sources import SOURCES, share_of, source_for, take_over
from flowexport.sources.shards import MemoryShardBook
from flowexport.sources.stream import STREAM_DELIVERY_MARGIN_MS, source_status
from tests.api.test_models import minimal_spec

ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/flows"


class Store:
    """A SourceStore in memory that records what it was asked."""

    def __init__(
        self,
        stored: SourceStatus | None = None,
        parts: dict[str, dict[str, Any]] | None = None,
        *,
        shared: bool = False,
        others_stop: bool = True,
    ) -> None:
        self.source = stored
        self.entries = parts or {}
        self.shared = shared
        self.others_stop = others_stop
        self.switches: list[tuple[SourceStatus, Progress]] = []
        self.waited = 0
        self.announced: list[str] = []

    def stored(self) -> SourceStatus | None:
        return self.source

    def parts(self) -> Mapping[str, Mapping[str, Any]]:
        return self.entries

    def keep(self, status: SourceStatus) -> None:
        self.source = status

    async def switch(self, status: SourceStatus, progress: Progress) -> None:
        self.source, self.entries = status, {}
        self.switches.append((status, copy.deepcopy(progress)))

    async def others_stopped(self) -> bool:
        self.waited += 1
        return self.others_stop

    def book(self, since: int | None) -> MemoryShardBook:
        return MemoryShardBook()

    def announce(
        self, reason: str, message: str, *, warning: bool = False, part: str | None = None
    ) -> None:
        self.announced.append(reason)


def valid_spec(**overrides: Any) -> FlowExportSpec:
    return FlowExportSpec.model_validate(minimal_spec(**overrides))


def stream(arn: str = ARN) -> StreamSubscription:
    return StreamSubscription(arn, arn.rsplit("/", 1)[1], "filter", 1_000, 24, True, True)


def subscription(with_stream: StreamSubscription | None = None) -> Subscription:
    return Subscription("arn:group", "fl-1", PIPELINE_FORMAT, True, True, stream=with_stream)


def streaming(since: int, *, shared: bool = False, arn: str = ARN) -> SourceStatus:
    return source_status(stream(arn), since, PIPELINE_FORMAT, shared)


def shard(arrived_ms: int, since: int, uploaded: int) -> dict[str, Any]:
    progress = Progress(ShardCursor("s", sequence="7", arrived_ms=arrived_ms))
    progress.flows_uploaded = uploaded
    return {**progress.to_state(), "since": since}


async def test_a_new_flowexport_polls_and_says_so_once() -> None:
    store = Store()
    progress = Progress(ReaderCursor(5_000))
    assert await take_over(SOURCES["poll"], store, progress, subscription(), "now") is progress
    assert [s.mode for s, _ in store.switches] == ["poll"]
    assert await take_over(SOURCES["poll"], store, progress, subscription(), "now") is progress
    assert len(store.switches) == 1  # the same source goes on: nothing written


async def test_leaving_a_stream_resumes_the_log_group_at_the_earliest_open_shard() -> None:
    since = 100_000
    parts = {"a": shard(400_000, since, 3), "b": shard(250_000, since, 4), "old": shard(1, 5, 9)}
    store = Store(streaming(since), parts)
    progress = Progress(ReaderCursor(since))
    resumed = await take_over(SOURCES["poll"], store, progress, subscription(), "now")
    assert resumed is not None
    assert resumed.cursor == ReaderCursor(
        250_000 - STREAM_DELIVERY_MARGIN_MS, log_group="arn:group"
    )
    assert resumed.flows_uploaded == 7  # the shards of this start, not the older one's
    assert [s.mode for s, _ in store.switches] == ["poll"]


async def test_the_same_stream_resumes_its_shards_and_another_stream_starts_over() -> None:
    store = Store(streaming(100_000))
    progress = Progress(ReaderCursor(100_000))
    sub = subscription(stream())
    assert await take_over(SOURCES["stream"], store, progress, sub, "now") is progress
    assert store.switches == []
    other = subscription(stream(ARN.replace("flows", "other")))
    assert await take_over(SOURCES["stream"], store, progress, other, "now") is not None
    # Back to the log group first: the new stream starts once it is drained.
    assert [s.mode for s, _ in store.switches] == ["poll"]


async def test_parts_shared_with_other_replicas_are_taken_back_only_once_they_stopped() -> None:
    sub = subscription(stream())
    progress = Progress(ReaderCursor(0))
    same = Store(streaming(1, shared=True), shared=True)
    await take_over(SOURCES["stream"], same, progress, sub, "now")
    assert same.waited == 0  # still shared the same way: nobody to wait for
    no_longer = Store(streaming(1, shared=True), shared=False)
    await take_over(SOURCES["stream"], no_longer, progress, sub, "now")
    assert no_longer.waited == 1
    stopping = Store(streaming(1, shared=True), others_stop=False)
    assert await take_over(SOURCES["poll"], stopping, progress, sub, "now") is None
    assert stopping.switches == []  # nothing decided while the front end stops


def test_replicas_read_a_share_only_of_a_shared_stream_start() -> None:
    spec = valid_spec(source={"mode": "stream", "stream": {"streamArn": ARN}})
    share = share_of(spec, streaming(42, shared=True))
    assert share is not None and share.since == 42 and share.source is source_for(spec.source)
    assert share == share_of(spec, streaming(42, shared=True))
    assert share_of(spec, streaming(42, shared=False)) is None
    assert share_of(spec, SourceStatus(mode="poll")) is None
    assert share_of(valid_spec(), streaming(42, shared=True)) is None  # the spec polls now


async def test_a_cursor_of_another_log_group_is_never_replayed() -> None:
    """The spec names a new log group while a slice of the old one is open: its page token
    means nothing there; the new group is read from startFrom, and the store says so."""
    old = ReaderCursor(5_000, 9_000, "token-of-the-old-group", 3, "arn:old")
    store = Store(SourceStatus(mode="poll"))
    progress = Progress(old)
    progress.flows_uploaded = 7
    resumed = await take_over(SOURCES["poll"], store, progress, subscription(), "earliest")
    assert resumed is not None
    assert resumed.cursor == ReaderCursor(0, log_group="arn:group")
    assert resumed.flows_uploaded == 7
    assert store.announced == ["CursorReset"] and len(store.switches) == 1
    # A cursor of the same group, or one that never named its group, goes on.
    same = Progress(ReaderCursor(5_000, 9_000, "token", 3, "arn:group"))
    assert (await take_over(SOURCES["poll"], store, same, subscription(), "now")) is same
    legacy = Progress(ReaderCursor(5_000, 9_000, "token", 3))
    kept = await take_over(SOURCES["poll"], store, legacy, subscription(), "now")
    assert kept is not None and kept.cursor.page_token == "token"
    assert kept.cursor.log_group == "arn:group" and store.announced == ["CursorReset"]
