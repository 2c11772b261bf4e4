"""Mode s3 through moto server (its S3 -> SQS ObjectCreated notifications are real) and the PCE
simulator: objects put, flows at the PCE, messages deleted only after acceptance."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import io
import json
from typing import Any

import pyarrow.parquet as pq
import pytest

from flowexport.api.models import SourceStatus
from flowexport.aws.reader import ReaderCursor
from flowexport.aws.s3 import (
    MAX_RECEIVE_COUNT,
    ensure_s3_source,
    notification_id_of,
    queue_name_of,
    receive,
    remove_s3_source,
)
from flowexport.core.logformat import DEFAULT_V2_FORMAT, PIPELINE_FORMAT, LogFormat
from flowexport.errors import FlowExportError, Reason
from flowexport.pce.client import PCEClient
from flowexport.pipeline import Progress
from flowexport.sources import s3 as s3_source
from flowexport.sources.s3 import SWITCH_MARGIN_MS, S3Runner, S3Source, S3Target
from flowexport.sources.shards import MemoryShardBook
from tests.cloud import Cloud
from tests.flowlines import line
from tests.flowparquet import write_parquet
from tests.pcesim import SimPCE

BUCKET = "central-flow-logs"
OWNER = "security/prod"
ACCOUNT = "123456789012"


def key(n: int, flow_log: str = "fl-0123456789abcdef0", hive: bool = False) -> str:
    name = f"{ACCOUNT}_vpcflowlogs_us-east-1_{flow_log}_20261206T16{n % 60:02d}Z_h{n}.log.gz"
    if hive:
        return (
            f"AWSLogs/aws-account-id={ACCOUNT}/aws-service=vpcflowlogs/aws-region=us-east-1/"
            f"year=2026/month=12/day=06/hour=16/{name}"
        )
    return f"AWSLogs/{ACCOUNT}/vpcflowlogs/us-east-1/2026/12/06/{name}"


def flow_object(first: int, count: int, fmt: LogFormat = DEFAULT_V2_FORMAT) -> bytes:
    """A flow-log object as AWS writes it: gzip text, the header line the field names."""
    lines = [" ".join(fmt.fields)]
    for i in range(first, first + count):
        lines.append(
            line(
                fmt,
                srcaddr=f"10.0.{i // 200}.{i % 200 + 1}",
                dstaddr="10.1.0.9",
                srcport=40000 + i % 20000,
                dstport=5432,
                account_id=ACCOUNT,
            )
        )
    return gzip.compress(("\n".join(lines) + "\n").encode())


def flow_lines(
    first: int, count: int, fmt: LogFormat = DEFAULT_V2_FORMAT, **values: Any
) -> list[str]:
    return [
        line(
            fmt,
            **{
                "srcaddr": f"10.0.{i // 200}.{i % 200 + 1}",
                "dstaddr": "10.1.0.9",
                "srcport": 40000 + i % 20000,
                "dstport": 5432,
                "account_id": ACCOUNT,
                **values,
            },
        )
        for i in range(first, first + count)
    ]


def parquet_object(
    first: int,
    count: int,
    fmt: LogFormat = PIPELINE_FORMAT,
    row_group_size: int | None = None,
    underscores: bool = True,
    **values: Any,
) -> bytes:
    """A flow-log object as AWS writes Parquet: a column per field, INT32/INT64/STRING."""
    out = io.BytesIO()
    write_parquet(out, flow_lines(first, count, fmt, **values), fmt, underscores, row_group_size)
    return out.getvalue()


def parquet_key(n: int, hive: bool = False) -> str:
    return key(n, hive=hive).removesuffix(".gz") + ".parquet"


@pytest.fixture
def bucket(cloud: Cloud) -> Cloud:
    cloud.raw("s3").create_bucket(Bucket=BUCKET)
    return cloud


def central(cloud: Cloud) -> Any:
    """spec.aws of a central bucket: no VPC (every flow-log object under the prefix)."""
    return cloud.spec(vpcId=None, logGroupName=None)


def spec(cloud: Cloud, **s3: Any) -> Any:
    return cloud.flowexport_spec(
        source={"mode": "s3", "s3": {"bucket": BUCKET, **s3}},
        ingestion={"batchSize": 100},
    )


def received(pce: SimPCE) -> list[tuple[str, str, int, int]]:
    return list(pce.call(lambda: list(pce.sim.state.flows)))


def posts(pce: SimPCE) -> int:
    return sum(1 for r in pce.requests() if r.get("method") == "POST")


class Saver:
    def __init__(self) -> None:
        self.saved: list[dict[str, Any]] = []

    async def __call__(self, progress: Progress) -> None:
        self.saved.append(progress.to_state())


def runner(
    cloud: Cloud, client: PCEClient, progress: Progress | None = None, **kwargs: Any
) -> S3Runner:
    found = ensure_s3_source(cloud.clients, central(cloud), spec(cloud).source.s3, OWNER)
    announced: list[tuple[str, str]] = []

    def announce(
        reason: str, message: str, *, warning: bool = False, part: str | None = None
    ) -> None:
        announced.append((reason, message))
        parts.append(part)

    parts: list[str | None] = []

    async def report(update: Any) -> None:
        reports.append(update)

    reports: list[Any] = []
    made = S3Runner(
        spec(cloud),
        S3Target(BUCKET, "", found.queue_url),
        cloud.clients,
        client,
        progress or Progress(ReaderCursor(0)),
        kwargs.pop("checkpoint", Saver()),
        report=report,
        announce=announce,
        **kwargs,
    )
    made.announced = announced  # type: ignore[attr-defined]
    made.parts = parts  # type: ignore[attr-defined]
    made.reports = reports  # type: ignore[attr-defined]
    return made


def queue_counts(cloud: Cloud, url: str) -> tuple[int, int]:
    attrs = cloud.raw("sqs").get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


def test_the_queue_dead_letter_queue_and_notification_are_made_owned_and_removed(
    bucket: Cloud,
) -> None:
    s3 = spec(bucket, prefix="AWSLogs/").source.s3
    found = ensure_s3_source(bucket.clients, central(bucket), s3, OWNER)
    assert found.queue_owned and found.notification_owned
    sqs = bucket.raw("sqs")
    attrs = sqs.get_queue_attributes(QueueUrl=found.queue_url, AttributeNames=["All"])["Attributes"]
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(f"{queue_name_of(OWNER)}-dlq")
    assert int(redrive["maxReceiveCount"]) == MAX_RECEIVE_COUNT
    assert "s3.amazonaws.com" in attrs["Policy"]
    assert sqs.list_queue_tags(QueueUrl=found.queue_url)["Tags"]["flowexport.io/owner"] == OWNER
    config = bucket.raw("s3").get_bucket_notification_configuration(Bucket=BUCKET)
    (mine,) = config["QueueConfigurations"]
    assert mine["Id"] == notification_id_of(OWNER) and mine["QueueArn"] == found.queue_arn
    again = ensure_s3_source(bucket.clients, central(bucket), s3, OWNER)  # idempotent
    assert again.queue_url == found.queue_url and again.changes == []
    removed = remove_s3_source(bucket.clients, central(bucket), s3, OWNER)
    assert len(removed) == 3
    assert (
        not bucket.raw("s3")
        .get_bucket_notification_configuration(Bucket=BUCKET)
        .get("QueueConfigurations")
    )
    assert not sqs.list_queues(QueueNamePrefix="flowexport-").get("QueueUrls")


def test_a_given_queue_is_used_and_never_removed(bucket: Cloud) -> None:
    url = bucket.raw("sqs").create_queue(QueueName="theirs")["QueueUrl"]
    s3 = spec(bucket, queueUrl=url).source.s3
    found = ensure_s3_source(bucket.clients, central(bucket), s3, OWNER)
    assert (found.queue_url, found.queue_owned) == (url, False)
    assert remove_s3_source(bucket.clients, central(bucket), s3, OWNER) == []
    missing = spec(bucket, queueUrl=url + "-gone").source.s3
    with pytest.raises(FlowExportError) as caught:
        ensure_s3_source(bucket.clients, central(bucket), missing, OWNER)
    assert caught.value.reason is Reason.QUEUE_NOT_FOUND


def test_the_vpcs_flow_log_to_the_bucket_is_created_with_its_options(bucket: Cloud) -> None:
    # moto refuses CreateFlowLogs to S3 with a key prefix ("... does not exist"), so this
    # creates it at the bucket's root; the prefix is only joined into LogDestination.
    s3 = spec(bucket, fileFormat="plain-text", perHourPartition=True).source.s3
    found = ensure_s3_source(bucket.clients, bucket.spec(), s3, OWNER)
    assert found.flow_log_id is not None and found.flow_log_owned
    (flow_log,) = bucket.clients.ec2.describe_flow_logs()["FlowLogs"]
    assert flow_log["LogDestinationType"] == "s3"
    assert flow_log["LogDestination"].startswith(f"arn:aws:s3:::{BUCKET}")
    again = ensure_s3_source(bucket.clients, bucket.spec(), s3, OWNER)
    assert again.flow_log_id == found.flow_log_id  # adopted, not created twice
    remove_s3_source(bucket.clients, bucket.spec(), s3, OWNER)
    assert bucket.clients.ec2.describe_flow_logs()["FlowLogs"] == []


async def test_objects_put_become_flows_and_their_messages_are_deleted(
    bucket: Cloud, pce: SimPCE, client: PCEClient
) -> None:
    reader = runner(bucket, client)
    s3 = bucket.raw("s3")
    s3.put_object(Bucket=BUCKET, Key=key(1), Body=flow_object(0, 150))
    s3.put_object(Bucket=BUCKET, Key=key(2, hive=True), Body=flow_object(150, 50, PIPELINE_FORMAT))
    s3.put_object(Bucket=BUCKET, Key="AWSLogs/readme.txt", Body=b"not a flow log")
    await reader.run(asyncio.Event(), once=True)
    assert len(received(pce)) == 200
    assert reader.tally.done == 2 and reader.tally.failed == 0
    assert reader.tally.skipped >= 1  # the readme (and moto's s3:TestEvent, if it sends one)
    assert reader.progress.records_read == 200 and reader.progress.flows_uploaded == 200
    assert queue_counts(bucket, reader.target.queue_url) == (0, 0)
    assert len(reader.done) == 2
    assert reader.tally.lag == 0  # the last receive found the queue empty


async def test_an_object_announced_again_uploads_nothing_twice(
    bucket: Cloud, pce: SimPCE, client: PCEClient
) -> None:
    reader = runner(bucket, client)
    s3 = bucket.raw("s3")
    s3.put_object(Bucket=BUCKET, Key=key(1), Body=flow_object(0, 120))
    bodies = []
    for message in receive(bucket.clients, reader.target.queue_url, 1, 0):
        bodies.append(message["Body"])  # visible again at once: the runner reads it too
    await reader.run(asyncio.Event(), once=True)
    sent = posts(pce)
    assert len(received(pce)) == 120
    sqs = bucket.raw("sqs")
    for body in bodies:  # S3 delivers at least once: the same event again
        sqs.send_message(QueueUrl=reader.target.queue_url, MessageBody=body)
    await reader.run(asyncio.Event(), once=True)
    assert posts(pce) == sent and reader.tally.skipped >= 1  # the done object: skipped
    # A new runner without the done record (a crash before it was stored) but with the
    # checkpointed window: the object is read again, its flows are not uploaded again.
    fresh = runner(bucket, client, progress=reader.progress)
    for body in bodies:
        sqs.send_message(QueueUrl=reader.target.queue_url, MessageBody=body)
    await fresh.run(asyncio.Event(), once=True)
    assert posts(pce) == sent and len(received(pce)) == 120
    assert fresh.tally.done == 1 and fresh.progress.records_read == 240
    assert queue_counts(bucket, reader.target.queue_url) == (0, 0)


async def test_an_unreadable_object_is_reported_and_blocks_nothing(
    bucket: Cloud, pce: SimPCE, client: PCEClient
) -> None:
    reader = runner(bucket, client)
    s3 = bucket.raw("s3")
    bad = key(1)
    parquet = key(3)[: -len("gz")] + "parquet"
    s3.put_object(Bucket=BUCKET, Key=bad, Body=b"\x1f\x8b\x08\x00garbage, not gzip")
    s3.put_object(Bucket=BUCKET, Key=parquet, Body=b"PAR1 as AWS writes Parquet")
    s3.put_object(Bucket=BUCKET, Key=key(2), Body=flow_object(0, 30))
    with pytest.raises(FlowExportError) as caught:
        await reader.run(asyncio.Event(), once=True)
    assert caught.value.reason is Reason.OBJECT_UNREADABLE
    assert bad in str(caught.value) and parquet in str(caught.value)
    assert "not readable Parquet" in reader.tally.unreadable[parquet]
    assert len(received(pce)) == 30  # the good object went through
    assert reader.tally.failed == 2 and reader.tally.done == 1
    reasons = [r for r, _ in reader.announced]  # type: ignore[attr-defined]
    assert reasons == ["ObjectUnreadable", "ObjectUnreadable"]
    assert any(bad in m for _, m in reader.announced)  # type: ignore[attr-defined]
    assert sorted(reader.parts) == sorted([bad, parquet])  # type: ignore[attr-defined]
    # Not deleted: left to the redrive policy (hidden until its visibility ends).
    assert queue_counts(bucket, reader.target.queue_url) == (0, 2)


async def test_a_message_stays_until_the_pce_accepted_its_flows(bucket: Cloud, pce: SimPCE) -> None:
    async with pce.client() as client:
        reader = runner(bucket, client, visibility_seconds=1)
        bucket.raw("s3").put_object(Bucket=BUCKET, Key=key(1), Body=flow_object(0, 20))
        pce.faults(fail_first=100, fail_status=503)
        stop = asyncio.Event()
        task = asyncio.create_task(reader.run(stop))
        await asyncio.sleep(3)
        assert received(pce) == []
        assert sum(queue_counts(bucket, reader.target.queue_url)) == 1  # still there
        pce.faults()
        for _ in range(100):
            if reader.tally.done:
                break
            await asyncio.sleep(0.2)
        stop.set()
        await task
    assert len(received(pce)) == 20
    assert queue_counts(bucket, reader.target.queue_url) == (0, 0)


async def test_stopping_mid_object_makes_its_message_visible_at_once(
    bucket: Cloud, pce: SimPCE, client: PCEClient
) -> None:
    stop = asyncio.Event()
    batches: list[int] = []

    async def prepare(flows: list[Any]) -> None:
        batches.append(len(flows))
        stop.set()  # SIGTERM after the first batch of the object

    reader = runner(bucket, client, prepare=prepare)
    bucket.raw("s3").put_object(Bucket=BUCKET, Key=key(1), Body=flow_object(0, 400))
    await reader.run(stop)
    assert 0 < len(received(pce)) < 400 and reader.tally.done == 0
    assert queue_counts(bucket, reader.target.queue_url) == (1, 0)  # visible at once
    again = runner(bucket, client, progress=reader.progress)
    await again.run(asyncio.Event(), once=True)
    assert len(received(pce)) == 400  # the rest, none of the first batch twice
    assert again.progress.flows_uploaded == 400


async def test_a_slow_pce_never_lets_another_reader_take_the_message(
    bucket: Cloud, pce: SimPCE
) -> None:
    async with pce.client() as client:
        reader = runner(bucket, client, visibility_seconds=2, extend_seconds=0.5)
        bucket.raw("s3").put_object(Bucket=BUCKET, Key=key(1), Body=flow_object(0, 20))
        pce.faults(delay_seconds=5.0)  # each PCE request takes 5 s: 2.5 visibility timeouts
        stop = asyncio.Event()
        task = asyncio.create_task(reader.run(stop))
        while reader.tally.in_flight == 0:
            await asyncio.sleep(0.1)
        other: list[Any] = []
        for _ in range(8):  # another replica polls meanwhile
            other += await asyncio.to_thread(receive, bucket.clients, reader.target.queue_url, 0, 2)
            await asyncio.sleep(0.5)
        assert other == []
        for _ in range(100):
            if reader.tally.done:
                break
            await asyncio.sleep(0.2)
        stop.set()
        await task
    assert len(received(pce)) == 20
    assert queue_counts(bucket, reader.target.queue_url) == (0, 0)


async def test_two_replicas_share_the_queue_each_object_read_once(
    bucket: Cloud, pce: SimPCE, client: PCEClient
) -> None:
    first = runner(bucket, client)
    stored = SourceStatus(mode="s3", shared=True, bucket=BUCKET, queue_url=first.target.queue_url)
    share = S3Source().share(spec(bucket), stored)
    assert share is not None and share.target.queue_url == first.target.queue_url
    assert S3Source().share(spec(bucket), stored.model_copy(update={"shared": False})) is None
    second = runner(bucket, client)
    s3 = bucket.raw("s3")
    for n in range(12):
        s3.put_object(Bucket=BUCKET, Key=key(n), Body=flow_object(n * 10, 10))
    stop = asyncio.Event()
    tasks = [asyncio.create_task(r.run(stop)) for r in (first, second)]
    for _ in range(150):
        if first.tally.done + second.tally.done == 12:
            break
        await asyncio.sleep(0.2)
    stop.set()
    await asyncio.gather(*tasks)
    assert first.tally.done + second.tally.done == 12
    assert first.tally.done > 0 and second.tally.done > 0  # both read
    flows = received(pce)
    assert len(flows) == 120 == len(set(flows))


async def test_parquet_objects_are_read_row_group_by_row_group(
    bucket: Cloud, pce: SimPCE, client: PCEClient
) -> None:
    reader = runner(bucket, client)
    s3 = bucket.raw("s3")
    # Several row groups of 64 rows, columns spelled with underscores (as Athena's DDL) ...
    s3.put_object(Bucket=BUCKET, Key=parquet_key(1), Body=parquet_object(0, 300, row_group_size=64))
    # ... and with hyphens, under the hive-compatible layout, in AWS's default format.
    body = parquet_object(300, 100, DEFAULT_V2_FORMAT, underscores=False)
    s3.put_object(Bucket=BUCKET, Key=parquet_key(2, hive=True), Body=body)
    # The content tells: Parquet under a key that does not say so is read as Parquet.
    s3.put_object(Bucket=BUCKET, Key=key(3), Body=parquet_object(400, 50))
    await reader.run(asyncio.Event(), once=True)
    assert reader.tally.failed == 0 and reader.tally.done == 3
    flows = received(pce)
    assert len(flows) == 450 == len(set(flows))
    assert reader.progress.records_read == 450 and reader.progress.flows_uploaded == 450
    assert queue_counts(bucket, reader.target.queue_url) == (0, 0)


async def test_parquet_rejects_and_nodata_count_as_in_text(
    bucket: Cloud, pce: SimPCE, client: PCEClient
) -> None:
    reader = runner(bucket, client)
    s3 = bucket.raw("s3")
    s3.put_object(Bucket=BUCKET, Key=parquet_key(1), Body=parquet_object(0, 20, action="REJECT"))
    nodata = parquet_object(20, 5, log_status="NODATA", srcaddr="-", dstaddr="-", srcport="-")
    s3.put_object(Bucket=BUCKET, Key=parquet_key(2), Body=nodata)
    s3.put_object(Bucket=BUCKET, Key=parquet_key(3), Body=parquet_object(30, 10))
    await reader.run(asyncio.Event(), once=True)
    assert len(received(pce)) == 10  # the ACCEPTed ones (spec: actions ACCEPT)
    skipped = reader.progress.records_skipped
    assert skipped == {"action_filtered": 20, "nodata": 5}
    assert reader.progress.records_read == 35


async def test_corrupt_and_truncated_parquet_are_unreadable_and_block_nothing(
    bucket: Cloud, pce: SimPCE, client: PCEClient
) -> None:
    reader = runner(bucket, client)
    s3 = bucket.raw("s3")
    whole = parquet_object(0, 500, row_group_size=100)
    truncated = whole[: len(whole) // 2]  # starts PAR1, no footer
    damaged = bytearray(whole)
    # The third row group's srcaddr pages zeroed: the footer reads, that row group does not.
    column = pq.ParquetFile(io.BytesIO(whole)).metadata.row_group(2).column(0)
    at = column.dictionary_page_offset or column.data_page_offset
    damaged[at : at + column.total_compressed_size] = bytes(column.total_compressed_size)
    s3.put_object(Bucket=BUCKET, Key=parquet_key(1), Body=truncated)
    s3.put_object(Bucket=BUCKET, Key=parquet_key(2), Body=bytes(damaged))
    s3.put_object(Bucket=BUCKET, Key=parquet_key(3), Body=parquet_object(1000, 30))
    with pytest.raises(FlowExportError) as caught:
        await reader.run(asyncio.Event(), once=True)
    assert caught.value.reason is Reason.OBJECT_UNREADABLE
    assert parquet_key(1) in str(caught.value) and parquet_key(2) in str(caught.value)
    assert reader.tally.failed == 2 and reader.tally.done == 1
    assert {(f[0]) for f in received(pce)} >= {"10.0.5.1"}  # the good object's flows
    assert queue_counts(bucket, reader.target.queue_url) == (0, 2)  # left to the redrive


def stamp_ms(minute: int) -> int:
    """The key timestamp of key(minute): 2026-12-06T16:mmZ."""
    return 1796515200_000 + (16 * 60 + minute) * 60_000


def test_stamp_ms_is_the_keys_time() -> None:
    from flowexport.aws.s3 import flow_log_key  # noqa: PLC0415

    found = flow_log_key(key(20))
    assert found is not None and found.stamp_ms == stamp_ms(20)


async def test_after_a_switch_records_the_mode_before_read_are_dropped(
    bucket: Cloud, pce: SimPCE, client: PCEClient
) -> None:
    since = stamp_ms(30)
    reader = runner(bucket, client)
    reader.target = dataclasses.replace(reader.target, since=since)
    before, after = since // 1000 - 60, since // 1000 + 60
    s3 = bucket.raw("s3")
    # Stamped 16:01: every record ended before 16:11, before since (16:30): not read at all.
    s3.put_object(Bucket=BUCKET, Key=key(1), Body=flow_object(500, 10))
    # Stamped 16:25: records around since, each cut by its end (text, then Parquet).
    text_lines = flow_lines(0, 10, PIPELINE_FORMAT, start=before - 60, end=before)
    text_lines += flow_lines(10, 10, PIPELINE_FORMAT, start=after - 60, end=after)
    body = "\n".join([" ".join(PIPELINE_FORMAT.fields), *text_lines]) + "\n"
    s3.put_object(Bucket=BUCKET, Key=key(25), Body=gzip.compress(body.encode()))
    out = io.BytesIO()
    rows = flow_lines(100, 10, PIPELINE_FORMAT, start=before - 60, end=before)
    rows += flow_lines(110, 10, PIPELINE_FORMAT, start=after - 60, end=after)
    write_parquet(out, rows, PIPELINE_FORMAT, row_group_size=6)
    s3.put_object(Bucket=BUCKET, Key=parquet_key(26), Body=out.getvalue())
    await reader.run(asyncio.Event(), once=True)
    flows = received(pce)
    assert sorted(f[0] for f in flows) == sorted(
        f"10.0.0.{i + 1}" for i in [*range(10, 20), *range(110, 120)]
    )
    assert reader.progress.records_skipped == {"before_switch": 20}
    assert reader.progress.records_read == 40
    assert reader.tally.done == 2 and reader.tally.skipped >= 1  # the 16:01 object
    assert queue_counts(bucket, reader.target.queue_url) == (0, 0)


async def test_the_log_group_cursor_follows_the_objects_done(
    bucket: Cloud, pce: SimPCE, client: PCEClient
) -> None:
    arn = "arn:aws:logs:us-east-1:123456789012:log-group:/flowexport/prod"
    reader = runner(bucket, client, progress=Progress(ReaderCursor(0, log_group=arn)))
    s3 = bucket.raw("s3")
    s3.put_object(Bucket=BUCKET, Key=key(20), Body=flow_object(0, 5))
    await reader.run(asyncio.Event(), once=True)
    # Where polling resumes after a switch back: the newest key timestamp less the margin.
    assert reader.progress.cursor == ReaderCursor(stamp_ms(20) - SWITCH_MARGIN_MS, log_group=arn)
    assert reader.checkpoint.saved[-1]["cursor"]["ingestedThrough"] == stamp_ms(10)  # type: ignore[attr-defined]
    s3.put_object(Bucket=BUCKET, Key=key(5), Body=flow_object(10, 5))  # older: never backwards
    await reader.run(asyncio.Event(), once=True)
    assert reader.progress.cursor.ingested_through == stamp_ms(10)


class Store:
    """A SourceStore holding one status (what `begin` needs)."""

    shared = False

    def __init__(self, status: SourceStatus | None) -> None:
        self.status = status

    def stored(self) -> SourceStatus | None:
        return self.status

    async def switch(self, status: SourceStatus, progress: Progress) -> None:
        self.status = status


async def test_entering_s3_from_poll_starts_at_the_cursor_less_the_margin() -> None:
    progress = Progress(ReaderCursor(stamp_ms(40)))
    from_poll = Store(SourceStatus(mode="poll"))
    await S3Source().begin(from_poll, progress)  # type: ignore[arg-type]
    assert from_poll.status == SourceStatus(mode="s3", since=stamp_ms(30))
    new = Store(None)  # a new FlowExport: whatever the queue announces
    await S3Source().begin(new, progress)  # type: ignore[arg-type]
    assert new.status == SourceStatus(mode="s3", since=0)
    other_queue = Store(SourceStatus(mode="s3", since=5, queue_url="q0"))
    await S3Source().begin(other_queue, progress)  # type: ignore[arg-type]
    assert other_queue.status == SourceStatus(mode="s3", since=5)


async def test_a_replica_not_holding_the_flowexport_checkpoints_its_counts_in_its_entry(
    bucket: Cloud, pce: SimPCE, client: PCEClient
) -> None:
    holder = runner(bucket, client)  # makes the queue
    stored = SourceStatus(mode="s3", shared=True, bucket=BUCKET, queue_url=holder.target.queue_url)
    share = S3Source().share(spec(bucket), stored)
    assert share is not None
    book = MemoryShardBook()
    s3 = bucket.raw("s3")

    async def read(first: int) -> None:
        for n in range(3):
            s3.put_object(Bucket=BUCKET, Key=key(first + n), Body=flow_object((first + n) * 10, 10))
        stop = asyncio.Event()

        async def report(update: Any) -> None:
            return None

        task = asyncio.create_task(
            S3Source().read_share(
                share, spec(bucket), bucket.clients, client, book, stop=stop, report=report
            )
        )
        for _ in range(150):
            saved = book.shards.get("s3-0")
            if saved is not None and saved.flows_uploaded >= (first + 3) * 10:
                break
            await asyncio.sleep(0.2)
        stop.set()
        await task

    await read(0)
    assert book.shards["s3-0"].flows_uploaded == 30 and book.shards["s3-0"].records_read == 30
    await read(3)  # a restart of the replica: its entry's counts go on
    assert book.shards["s3-0"].flows_uploaded == 60 and book.shards["s3-0"].records_read == 60
    assert len(received(pce)) == 60


def test_the_visibility_timeout_is_120_s_unless_the_flag_or_the_env_says(
    bucket: Cloud, client: PCEClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3_source, "_visibility", [])  # the process's setting, restored after
    monkeypatch.delenv(s3_source.ENV_VISIBILITY, raising=False)
    made = runner(bucket, client)
    assert (made.visibility, made.extend) == (120, 40.0)  # the documented defaults
    assert s3_source.configure() == 120
    monkeypatch.setenv(s3_source.ENV_VISIBILITY, "9")
    assert s3_source.configure() == 9  # the env var
    made = runner(bucket, client)
    assert (made.visibility, made.extend) == (9, 3.0)  # extended every third of it
    assert s3_source.configure(30) == 30  # the flag wins over the env var
    assert runner(bucket, client).visibility == 30
    for bad in (2, 43_201):
        with pytest.raises(ValueError, match=r"visibility timeout must be 3\.\.43200"):
            s3_source.configure(bad)
    monkeypatch.setenv(s3_source.ENV_VISIBILITY, "soon")
    with pytest.raises(ValueError, match="whole number"):
        s3_source.configure()
    assert s3_source.configured_visibility() == 30  # a refused value changes nothing
