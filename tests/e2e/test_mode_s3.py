"""Mode s3 through the real operator process: objects put in a bucket reach the PCE through
the queue the operator made, status.source tells, and deletion removes what it made."""

from __future__ import annotations

import gzip
import io
import time
from datetime import UTC, datetime

from flowexport.core.logformat import PIPELINE_FORMAT, LogFormat
from tests.e2e.conftest import FE, Stack, eventually
from tests.flowlines import connection_address, line, put_connections
from tests.flowparquet import write_parquet

BUCKET = "central-flow-logs"
ACCOUNT = "123456789012"
FORMAT = (
    "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes "
    "start end action log-status"
)


def put_object(stack: Stack, flow_log: str, n: int, count: int = 10) -> str:
    key = (
        f"AWSLogs/{ACCOUNT}/vpcflowlogs/us-east-1/2026/12/06/"
        f"{ACCOUNT}_vpcflowlogs_us-east-1_{flow_log}_20261206T16{n:02d}Z_h{n}.log.gz"
    )
    lines = [FORMAT] + [
        f"2 {ACCOUNT} eni-1 10.0.{n}.{i + 1} 10.1.0.9 {40000 + i} 5432 6 1 60 "
        "1765000000 1765000060 ACCEPT OK"
        for i in range(count)
    ]
    body = gzip.compress(("\n".join(lines) + "\n").encode())
    stack.aws("s3").put_object(Bucket=BUCKET, Key=key, Body=body)
    return key


def put_parquet(stack: Stack, flow_log: str, n: int, count: int = 10) -> str:
    """A Parquet object as AWS writes one (a column per field, INT32/INT64/STRING, gzip)."""
    key = (
        f"AWSLogs/{ACCOUNT}/vpcflowlogs/us-east-1/2026/12/06/"
        f"{ACCOUNT}_vpcflowlogs_us-east-1_{flow_log}_20261206T17{n:02d}Z_p{n}.log.parquet"
    )
    lines = [
        f"2 {ACCOUNT} eni-1 10.2.{n}.{i + 1} 10.1.0.9 {40000 + i} 5432 6 1 60 "
        "1765000000 1765000060 ACCEPT OK"
        for i in range(count)
    ]
    body = io.BytesIO()
    write_parquet(body, lines, LogFormat.parse(FORMAT), row_group_size=max(1, count // 3))
    stack.aws("s3").put_object(Bucket=BUCKET, Key=key, Body=body.getvalue())
    return key


def source(stack: Stack) -> dict[str, object]:
    found: dict[str, object] = stack.get()["status"].get("source") or {}
    return found


def test_mode_s3_objects_reach_the_pce_and_survive_a_restart(stack: Stack) -> None:
    stack.aws("s3").create_bucket(Bucket=BUCKET)
    stack.apply(stack.flowexport(source={"mode": "s3", "s3": {"bucket": BUCKET}}))
    eventually(lambda: stack.condition("prod", "Ready") == ("True", "Ready"), what="Ready")
    flow_log = stack.get()["status"]["flowLogId"]
    assert flow_log.startswith("fl-")  # the VPC's flow log into the bucket
    assert "logGroupArn" not in stack.get()["status"]
    put_object(stack, flow_log, 1)
    put_object(stack, flow_log, 2)
    put_object(stack, "fl-another0", 3)  # another flow log's object: skipped
    eventually(lambda: len(stack.received()) == 20, what="20 flows at the PCE")
    eventually(lambda: source(stack).get("objectsDone") == 2, what="objectsDone 2")
    status = stack.get()["status"]
    assert status["source"]["mode"] == "s3" and status["source"]["bucket"] == BUCKET
    assert status["counts"]["flowsUploaded"] == 20
    bad = put_object(stack, flow_log, 9).replace("_h9.", "_bad.")
    stack.aws("s3").put_object(Bucket=BUCKET, Key=bad, Body=b"\x1f\x8b not gzip")
    eventually(
        lambda: any(
            e["reason"] == "ObjectUnreadable" and bad in e["message"] for e in stack.events()
        ),
        what="a Warning Event naming the unreadable object",
    )
    labels = f'{{name="prod",namespace="security",part="{bad}",reason="ObjectUnreadable"}}'
    assert stack.operator.metric(f"flowexport_part_failures_total{labels}") == 1
    eventually(lambda: len(stack.received()) == 30, what="the good object beside it")
    assert stack.operator.stop() == 0  # SIGTERM
    put_object(stack, flow_log, 4)
    stack.operator.start()
    eventually(lambda: len(stack.received()) == 40, what="the object put while stopped")
    assert len(stack.received()) == 40
    sqs = stack.aws("sqs")
    assert len(sqs.list_queues(QueueNamePrefix="flowexport-").get("QueueUrls") or []) == 2
    stack.kube.delete(f"{FE}/prod")
    eventually(lambda: stack.kube.get(f"{FE}/prod").status_code == 404, what="deletion")
    assert not sqs.list_queues(QueueNamePrefix="flowexport-").get("QueueUrls")
    assert stack.aws("ec2").describe_flow_logs()["FlowLogs"] == []


def test_mode_s3_reads_parquet_objects(stack: Stack) -> None:
    stack.aws("s3").create_bucket(Bucket=BUCKET)
    stack.apply(stack.flowexport(source={"mode": "s3", "s3": {"bucket": BUCKET}}))
    eventually(lambda: stack.condition("prod", "Ready") == ("True", "Ready"), what="Ready")
    flow_log = stack.get()["status"]["flowLogId"]
    put_parquet(stack, flow_log, 1, count=30)
    put_object(stack, flow_log, 2)  # text beside it
    bad = put_parquet(stack, flow_log, 3).replace("_p3.", "_bad.")  # p3 is good
    stack.aws("s3").put_object(Bucket=BUCKET, Key=bad, Body=b"PAR1 but no Parquet after it")
    eventually(lambda: len(stack.received()) == 50, what="50 flows at the PCE")
    eventually(lambda: source(stack).get("objectsDone") == 3, what="objectsDone 3")
    eventually(
        lambda: any(
            e["reason"] == "ObjectUnreadable" and bad in e["message"] for e in stack.events()
        ),
        what="a Warning Event naming the corrupt Parquet object",
    )
    assert sum(1 for f in stack.received() if f[0].startswith("10.2.1.")) == 30  # Parquet's
    assert len(set(stack.received())) == 50
    assert stack.get()["status"]["counts"]["recordsRead"] == 50
    assert source(stack)["objectsFailed"] == 1


def switch(stack: Stack, source: dict[str, object]) -> None:
    answer = stack.kube.patch(
        f"{FE}/prod",
        json={"spec": {"source": source}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert answer.status_code == 200, answer.text


def put_records(stack: Stack, flow_log: str, at: float, first: int, count: int, end: int) -> str:
    """An object as AWS writes one, keyed by the interval of `at`, of connections `first`..."""
    stamp = datetime.fromtimestamp(at - at % 300, UTC)
    key = (
        f"AWSLogs/{ACCOUNT}/vpcflowlogs/us-east-1/{stamp:%Y/%m/%d}/{ACCOUNT}_vpcflowlogs_"
        f"us-east-1_{flow_log}_{stamp:%Y%m%dT%H%MZ}_s{first}.log.gz"
    )
    lines = [" ".join(PIPELINE_FORMAT.fields)] + [
        line(
            PIPELINE_FORMAT,
            srcaddr=connection_address(i),
            srcport=40000 + i,
            dstaddr="10.1.0.9",
            dstport=443,
            start=end - 60,
            end=end,
        )
        for i in range(first, first + count)
    ]
    body = gzip.compress(("\n".join(lines) + "\n").encode())
    stack.aws("s3").put_object(Bucket=BUCKET, Key=key, Body=body)
    return key


def test_poll_to_s3_to_poll_uploads_every_flow_once(stack: Stack) -> None:
    """The log group and the bucket are two deliveries of the same records: a switch neither
    uploads the records the mode before read again nor leaves a gap."""
    logs, group = stack.aws("logs"), "/flowexport/prod"
    stack.aws("s3").create_bucket(Bucket=BUCKET)
    stack.apply(stack.flowexport(**{"ingestion.aggregationWindowSeconds": 3600}))
    eventually(lambda: stack.condition("prod", "Ready") == ("True", "Ready"), what="Ready")
    now = int(time.time())
    # Poll: connections 0-9, ended an hour ago.
    put_connections(logs, group, 10, start=0, end=now - 3600)
    eventually(lambda: len(stack.received()) == 10, what="the polled flows")
    cursor = stack.get()["status"]["cursor"]["ingestedThrough"]
    switch(stack, {"mode": "s3", "s3": {"bucket": BUCKET}})
    eventually(lambda: source(stack).get("mode") == "s3", what="mode s3")
    since = source(stack)["since"]
    assert since >= cursor - 600_000  # the log group's cursor (or later) less 10 minutes
    flow_log = stack.get()["status"]["flowLogId"]
    # S3 delivers the same records as the log group: 0-9 again in an object of an hour ago
    # (not read at all) and in one of now (its records cut by their end), with 10-19.
    put_records(stack, flow_log, now - 3600, 0, 10, end=now - 3600)
    put_records(stack, flow_log, now, 0, 10, end=now - 3600)
    put_records(stack, flow_log, now, 10, 10, end=now - 5)
    eventually(lambda: len(stack.received()) == 20, what="the flows from S3")
    eventually(lambda: source(stack).get("objectsDone") == 2, what="objectsDone 2")
    counts = stack.get()["status"]["counts"]
    assert counts["recordsSkipped"]["before_switch"] == 10
    assert source(stack)["objectsSkipped"] >= 1  # the hour-old object (and any s3:TestEvent)
    # Back to poll: the log group also has 10-19 (CloudWatch Logs got them too) and 20-29.
    put_connections(logs, group, 10, start=10, end=now - 5)
    switch(stack, {"mode": "poll"})
    eventually(lambda: source(stack).get("mode") == "poll", what="mode poll")
    put_connections(logs, group, 10, start=20, end=now)
    eventually(lambda: len(stack.received()) == 30, what="the polled flows after the switch")
    time.sleep(3)  # three more polls: nothing more arrives
    flows = stack.received()
    assert len(flows) == len(set(flows)) == 30
    assert {f[0] for f in flows} == {connection_address(i) for i in range(30)}
