"""Mode stream end to end: CloudWatch Logs -> subscription filter -> Kinesis (moto server) ->
shard pipelines -> the PCE simulator, with restarts, resharding, bad records and faults."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from flowexport.api.conditions import ConditionUpdate
from flowexport.api.models import FlowExportSpec
from flowexport.aws.kinesis_reader import ShardCursor
from flowexport.core.logformat import PIPELINE_FORMAT
from flowexport.errors import FlowExportError, Reason
from flowexport.pce.client import PCEClient
from flowexport.pipeline import MAX_CHECKPOINTED_FLOWS, Progress
from flowexport.sources import ensure_subscription
from flowexport.sources.shards import (
    MemoryShardBook,
    ShardError,
    ShardRunner,
    list_shards,
    window_flows,
)
from tests.aws.test_pipeline import flow_line, received
from tests.cloud import Cloud
from tests.pcesim import SimPCE

GROUP = "/flowexport/test"
ROLE = "arn:aws:iam::123456789012:role/cwl-to-kinesis"


def full_spec(cloud: Cloud, **stream: Any) -> FlowExportSpec:
    return cloud.flowexport_spec(
        source={"mode": "stream", "stream": {"subscriptionRoleArn": ROLE, **stream}}
    )


class Stream:
    def __init__(self, cloud: Cloud, **stream: Any) -> None:
        self.cloud = cloud
        self.spec = full_spec(cloud, **stream)
        sub = ensure_subscription(cloud.clients, self.spec.aws, "flows/prod", self.spec.source)
        assert sub.stream is not None
        self.sub = sub
        self.name = sub.stream.stream_name
        self.streams = 0

    def put(self, lines: list[str], stream: str | None = None) -> None:
        self.streams += 1
        name = stream or f"eni-{self.streams}-all"
        logs = self.cloud.clients.logs
        logs.create_log_stream(logGroupName=GROUP, logStreamName=name)
        stamp = int(time.time() * 1000)
        logs.put_log_events(
            logGroupName=GROUP,
            logStreamName=name,
            logEvents=[{"timestamp": stamp, "message": text} for text in lines],
        )

    def runner(self, client: PCEClient, book: MemoryShardBook, **kw: Any) -> ShardRunner:
        assert self.sub.stream is not None
        return ShardRunner(
            self.spec,
            self.sub.stream,
            self.cloud.clients,
            client,
            PIPELINE_FORMAT,
            book,
            since_ms=kw.pop("since_ms", int(time.time() * 1000) - 60_000),
            **kw,
        )


def lines(start: int, count: int) -> list[str]:
    return [flow_line(i) for i in range(start, start + count)]


async def read(stream: Stream, client: PCEClient, book: MemoryShardBook, **kw: Any) -> None:
    await stream.runner(client, book, **kw).run_once(asyncio.Event())


async def test_records_reach_the_pce_and_a_restart_repeats_nothing(
    cloud: Cloud, pce: SimPCE, client: PCEClient
) -> None:
    stream = Stream(cloud, shardCount=2)
    stream.put(lines(0, 30))
    stream.put(lines(30, 30))
    book = MemoryShardBook()
    await read(stream, client, book)
    assert len(received(pce)) == 60
    assert sum(p.records_read for p in book.shards.values()) == 60
    assert set(book.shards) == {"shardId-000000000000", "shardId-000000000001"}
    assert all(v == 0 for v in book.behind.values())
    # A new process from the checkpoints reads only what is new.
    stream.put(lines(60, 10))
    restarted = MemoryShardBook(book.shards)
    await read(stream, client, restarted)
    assert len(received(pce)) == 70
    assert sum(p.records_read for p in restarted.shards.values()) == 70


async def test_a_crash_before_the_checkpoint_repeats_at_most_the_batch_in_flight(
    cloud: Cloud, pce: SimPCE, client: PCEClient
) -> None:
    stream = Stream(cloud)
    stream.put(lines(0, 40))
    book = MemoryShardBook()

    class Dying(MemoryShardBook):
        async def save(self, shard_id: str, progress: Progress, behind: int | None) -> None:
            raise RuntimeError("killed before the checkpoint was written")

    spec = stream.spec.model_copy(
        update={"ingestion": stream.spec.ingestion.model_copy(update={"batch_size": 20})}
    )
    stream.spec = spec
    with pytest.raises(RuntimeError):
        await read(stream, client, Dying())
    first = len(pce.requests())
    await read(stream, client, book)
    flows = received(pce)
    assert len(set(flows)) == 40
    assert len(flows) - 40 <= 10  # the one batch (half of batchSize per flush) in flight
    assert first >= 1


async def test_control_messages_and_garbage_are_skipped_and_counted(
    cloud: Cloud, pce: SimPCE, client: PCEClient
) -> None:
    stream = Stream(cloud)
    kinesis = cloud.clients.kinesis
    control = {
        "messageType": "CONTROL_MESSAGE",
        "logEvents": [{"id": "1", "timestamp": 1, "message": "CWL CONTROL MESSAGE"}],
    }
    kinesis.put_record(
        StreamName=stream.name, Data=gzip.compress(json.dumps(control).encode()), PartitionKey="a"
    )
    kinesis.put_record(StreamName=stream.name, Data=b"not gzip at all", PartitionKey="a")
    kinesis.put_record(StreamName=stream.name, Data=gzip.compress(b"[1, 2]"), PartitionKey="a")
    stream.put(lines(0, 5))
    book = MemoryShardBook()
    await read(stream, client, book)
    assert len(received(pce)) == 5
    (progress,) = book.shards.values()
    assert progress.records_skipped.get("undecodable") == 2
    assert progress.records_read == 5


class ReshardedKinesis:
    """A stream after a split, as AWS serves it (moto keeps writing to a closed parent and never
    ends its iterator): the parent closed, read to its end, then its two children."""

    def __init__(self, real: Any, parent: list[bytes], children: list[list[bytes]]) -> None:
        self.real = real
        self.data = {"shardId-000000000000": parent}
        self.parents: dict[str, str | None] = {"shardId-000000000000": None}
        for i, records in enumerate(children, 1):
            self.data[f"shardId-00000000000{i}"] = records
            self.parents[f"shardId-00000000000{i}"] = "shardId-000000000000"
        self.reads: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def list_shards(self, **kw: Any) -> Any:
        return {
            "Shards": [
                {
                    "ShardId": shard,
                    **({"ParentShardId": parent} if parent else {}),
                    "SequenceNumberRange": {"StartingSequenceNumber": "0"}
                    | ({} if parent else {"EndingSequenceNumber": str(len(self.data[shard]))}),
                }
                for shard, parent in self.parents.items()
            ]
        }

    def get_shard_iterator(self, **kw: Any) -> Any:
        start = 0
        if kw["ShardIteratorType"] == "AFTER_SEQUENCE_NUMBER":
            start = int(kw["StartingSequenceNumber"])
        return {"ShardIterator": f"{kw['ShardId']}|{start}"}

    def get_records(self, **kw: Any) -> Any:
        shard, at = kw["ShardIterator"].split("|")
        records = self.data[shard][int(at) : int(at) + 3]
        end = int(at) + len(records)
        self.reads.append(shard)
        closed = self.parents[shard] is None
        return {
            "Records": [
                {
                    "SequenceNumber": str(int(at) + i + 1),
                    "Data": d,
                    "ApproximateArrivalTimestamp": time.time(),
                }
                for i, d in enumerate(records)
            ],
            "NextShardIterator": None
            if closed and end == len(self.data[shard])
            else f"{shard}|{end}",
            "MillisBehindLatest": 0 if end == len(self.data[shard]) else 1000,
        }


def document(texts: list[str]) -> bytes:
    events = [
        {"id": str(i), "timestamp": int(time.time() * 1000), "message": t}
        for i, t in enumerate(texts)
    ]
    body = {
        "messageType": "DATA_MESSAGE",
        "logGroup": GROUP,
        "logStream": "eni-1-all",
        "logEvents": events,
    }
    return gzip.compress(json.dumps(body).encode())


async def test_a_resharded_stream_reads_parents_to_their_end_before_children(
    cloud: Cloud, pce: SimPCE, client: PCEClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = Stream(cloud)
    parent = [document(lines(i * 5, 5)) for i in range(7)]
    children = [[document(lines(100 * c + i * 5, 5)) for i in range(4)] for c in (1, 2)]
    fake = ReshardedKinesis(cloud.clients.kinesis, parent, children)
    monkeypatch.setattr(cloud.clients, "_kinesis", fake)
    book = MemoryShardBook()
    runner = stream.runner(client, book)
    shards = list_shards(cloud.clients, stream.name)
    assert [s.shard_id for s in runner.ready(shards)] == ["shardId-000000000000"]
    await runner.run_once(asyncio.Event())
    first_child = next(i for i, s in enumerate(fake.reads) if s != "shardId-000000000000")
    assert set(fake.reads[:first_child]) == {"shardId-000000000000"}
    assert "shardId-000000000000" not in fake.reads[first_child:]
    assert book.shards["shardId-000000000000"].cursor.ended
    assert len(received(pce)) == 35 + 40
    # A restart reads nothing again: the parent is done, the children at their ends.
    before = len(pce.requests())
    fake.reads.clear()
    await stream.runner(client, MemoryShardBook(book.shards)).run_once(asyncio.Event())
    assert "shardId-000000000000" not in fake.reads
    assert len(pce.requests()) == before


class Faulty:
    """The Kinesis client with faults: GetRecords throttled, iterators expired."""

    def __init__(self, real: Any, throttle: int = 0, expire: int = 0) -> None:
        self.real, self.throttle, self.expire = real, throttle, expire
        self.faults: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def get_records(self, **kw: Any) -> Any:
        for kind in ("throttle", "expire"):
            if getattr(self, kind):
                setattr(self, kind, getattr(self, kind) - 1)
                code = (
                    "ProvisionedThroughputExceededException"
                    if kind == "throttle"
                    else "ExpiredIteratorException"
                )
                self.faults.append(code)
                raise ClientError({"Error": {"Code": code, "Message": kind}}, "GetRecords")
        return self.real.get_records(**kw)


async def test_throttling_and_expired_iterators_are_survived(
    cloud: Cloud, pce: SimPCE, client: PCEClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = Stream(cloud)
    stream.put(lines(0, 10))
    faulty = Faulty(cloud.clients.kinesis, throttle=2, expire=1)
    monkeypatch.setattr(cloud.clients, "_kinesis", faulty)
    monkeypatch.setattr("flowexport.aws.kinesis_reader.THROTTLE_WAITS", (0.01, 0.01, 0.01))
    book = MemoryShardBook()
    await read(stream, client, book)
    assert faulty.faults.count("ProvisionedThroughputExceededException") == 2
    assert "ExpiredIteratorException" in faulty.faults
    assert len(received(pce)) == 10


async def test_persistent_throttling_is_reported_as_retrying(
    cloud: Cloud, client: PCEClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = Stream(cloud)
    stream.put(lines(0, 3))
    monkeypatch.setattr(cloud.clients, "_kinesis", Faulty(cloud.clients.kinesis, throttle=10**6))
    monkeypatch.setattr("flowexport.aws.kinesis_reader.THROTTLE_WAITS", (0.01,))
    reports: list[ConditionUpdate] = []
    stop = asyncio.Event()

    async def report(update: ConditionUpdate) -> None:
        reports.append(update)
        stop.set()

    runner = stream.runner(client, MemoryShardBook(), report=report)
    await asyncio.wait_for(runner.run_forever(stop), 30)
    assert reports and reports[0].ok is False and str(reports[0].reason) == "AWSThrottled"
    assert reports[0].message.startswith("retrying: shard shardId-000000000000")


async def test_a_checkpoint_past_retention_is_reported_as_lost(
    cloud: Cloud, pce: SimPCE, client: PCEClient
) -> None:
    stream = Stream(cloud)
    stream.put(lines(0, 4))
    old = int(time.time() * 1000) - 30 * 3_600_000
    shard = "shardId-000000000000"
    book = MemoryShardBook({shard: Progress(ShardCursor(shard, "0", None, old))})
    await read(stream, client, book)
    assert len(book.gaps) == 1 and shard in book.gaps[0] and "lost" in book.gaps[0]
    assert len(received(pce)) == 4


async def test_forever_mode_follows_new_records_until_stopped(
    cloud: Cloud, pce: SimPCE, client: PCEClient
) -> None:
    stream = Stream(cloud, shardCount=2, readIntervalMillis=200)
    book = MemoryShardBook()
    reports: list[ConditionUpdate] = []

    async def report(update: ConditionUpdate) -> None:
        reports.append(update)

    stop = asyncio.Event()
    runner = stream.runner(client, book, report=report, list_seconds=0.5)
    task = asyncio.create_task(runner.run_forever(stop))
    await asyncio.sleep(1)
    stream.put(lines(0, 25))
    deadline = time.monotonic() + 20
    while len(received(pce)) < 25 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(task, 20)
    assert len(received(pce)) == 25
    assert any(r.ok and "caught up with Kinesis stream" in r.message for r in reports)


async def test_shards_follow_their_owner_and_others_failures_are_reported(
    cloud: Cloud, pce: SimPCE, client: PCEClient
) -> None:
    """Shards another process reads are left alone (Ingesting True says so), a shard handed
    over mid-run is stopped and resumed from its checkpoint by the new reader, and a failure
    another process notes turns Ingesting False."""
    stream = Stream(cloud, shardCount=2)
    stream.put(lines(0, 40))
    reports: list[ConditionUpdate] = []

    async def report(update: ConditionUpdate) -> None:
        reports.append(update)

    class Shared(MemoryShardBook):
        def __init__(self) -> None:
            super().__init__()
            self.owned: set[str] = set()
            self.failing: dict[str, ShardError] = {}

        def owns(self, shard_id: str) -> bool:
            return shard_id in self.owned

        def errors(self) -> dict[str, ShardError]:
            return self.failing

    book = Shared()
    runner = stream.runner(client, book, report=report, list_seconds=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run_forever(stop))
    await asyncio.sleep(1.0)
    assert not runner.running and received(pce) == []
    assert reports[-1].ok is True and "0 read by this replica" in reports[-1].message
    first, second = "shardId-000000000000", "shardId-000000000001"
    book.owned = {first, second}
    for _ in range(100):
        if sum(p.records_read for p in book.shards.values()) == 40:
            break
        await asyncio.sleep(0.1)
    assert len(received(pce)) == 40
    book.owned = {second}  # the first moves to another process: stopped within a second
    await asyncio.sleep(1.5)
    assert set(runner.running) == {second}
    book.failing = {first: ShardError(Reason.PCE_UNAUTHORIZED, "replica r1: 401")}
    stream.put(lines(40, 5))
    for _ in range(100):
        if reports[-1].ok is False:
            break
        await asyncio.sleep(0.1)
    assert reports[-1].reason == Reason.PCE_UNAUTHORIZED and first in reports[-1].message
    stop.set()
    await task


def test_the_shards_share_the_window_flows_a_log_group_keeps() -> None:
    for shards in (1, 2, 4, 8):
        assert window_flows(shards) * shards == MAX_CHECKPOINTED_FLOWS == 16_384
    assert window_flows(1_000) == 64


async def test_a_clean_restart_uploads_no_flow_twice_in_a_window_up_to_its_share(
    cloud: Cloud, pce: SimPCE, client: PCEClient
) -> None:
    """16,000 distinct flows on one shard (its share: 16,384), read, stopped, restarted from
    the checkpoint, then the same connections again within the window: nothing is uploaded
    twice (the issue measured 3,712 repeats when a shard kept 12,288)."""
    stream = Stream(cloud, shardCount=1)
    for start in range(0, 16_000, 4_000):
        stream.put(lines(start, 4_000))
    book = MemoryShardBook()
    await read(stream, client, book)
    assert len(received(pce)) == 16_000
    for start in range(0, 16_000, 4_000):
        stream.put(lines(start, 4_000))
    restarted = MemoryShardBook(book.shards)
    await read(stream, client, restarted)
    assert sum(p.records_read for p in restarted.shards.values()) == 32_000
    assert len(received(pce)) == 16_000


@pytest.mark.parametrize("replaced", [False, True])
async def test_a_filter_deleted_or_replaced_out_of_band_ends_the_reading_at_once(
    cloud: Cloud, client: PCEClient, replaced: bool
) -> None:
    """The holder checks the filter feeding the stream (here every 0.2 s; by default every
    FILTER_CHECK_SECONDS): deleted, or replaced by another of the same name, it raises a
    retryable SubscriptionFilterChanged, so the worker has it re-created and the gap read."""
    stream = Stream(cloud)
    assert stream.sub.stream is not None
    runner = stream.runner(client, MemoryShardBook(), filter_check_seconds=0.2)
    logs = cloud.clients.logs
    name = stream.sub.stream.filter_name
    logs.delete_subscription_filter(logGroupName=GROUP, filterName=name)
    if replaced:
        time.sleep(0.01)  # another creation time
        ensure_subscription(cloud.clients, stream.spec.aws, "flows/prod", stream.spec.source)
    with pytest.raises(FlowExportError) as caught:
        await asyncio.wait_for(runner.run_forever(asyncio.Event()), 30)
    assert caught.value.reason is Reason.SUBSCRIPTION_FILTER_CHANGED and caught.value.retryable
    assert name in str(caught.value)


async def test_the_filter_the_stream_started_with_keeps_it_reading(
    cloud: Cloud, client: PCEClient
) -> None:
    stream = Stream(cloud)
    runner = stream.runner(client, MemoryShardBook(), filter_check_seconds=0.2)
    stop = asyncio.Event()
    reading = asyncio.create_task(runner.run_forever(stop))
    await asyncio.sleep(1.5)
    assert not reading.done()
    stop.set()
    await asyncio.wait_for(reading, 30)
