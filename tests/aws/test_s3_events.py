"""Mode s3's S3 event records and flow-log key layouts (no AWS)."""

from __future__ import annotations

import json
from typing import Any

from flowexport.aws.s3 import FlowLogKey, ObjectRef, announced, flow_log_key

NAME = "123456789012_vpcflowlogs_us-east-1_fl-0123456789abcdef0_20261206T1620Z_a1b2c3d4.log.gz"


def record(key: str, name: str = "ObjectCreated:Put", etag: str = "abc") -> dict[str, Any]:
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2026-12-06T16:30:00.000Z",
        "eventName": name,
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": "central", "arn": "arn:aws:s3:::central"},
            "object": {"key": key, "size": 42, "eTag": etag, "sequencer": "0055AED6DCD90281E5"},
        },
    }


def test_the_plain_layout() -> None:
    key = f"AWSLogs/123456789012/vpcflowlogs/us-east-1/2026/12/06/{NAME}"
    assert flow_log_key(key) == FlowLogKey(
        "123456789012", "us-east-1", "fl-0123456789abcdef0", "20261206T1620Z", False
    )


def test_the_hourly_layout_under_a_prefix() -> None:
    key = f"logs/a/AWSLogs/123456789012/vpcflowlogs/us-east-1/2026/12/06/16/{NAME}"
    found = flow_log_key(key, "logs/a/")
    assert found is not None and found.flow_log_id == "fl-0123456789abcdef0"
    assert flow_log_key(key, "other/") is None  # outside the prefix


def test_the_hive_compatible_layout_hourly_and_daily() -> None:
    base = "AWSLogs/aws-account-id=123456789012/aws-service=vpcflowlogs/aws-region=us-east-1"
    daily = f"{base}/year=2026/month=12/day=06/{NAME}"
    hourly = f"{base}/year=2026/month=12/day=06/hour=16/{NAME}"
    for key in (daily, hourly):
        found = flow_log_key(key)
        assert found is not None and (found.account, found.region) == (
            "123456789012",
            "us-east-1",
        )


def test_parquet_keys_are_flow_logs_that_say_so() -> None:
    key = f"AWSLogs/123456789012/vpcflowlogs/us-east-1/2026/12/06/{NAME[:-2]}parquet"
    found = flow_log_key(key)
    assert found is not None and found.parquet


def test_keys_that_are_not_flow_log_files() -> None:
    for key in (
        "AWSLogs/123456789012/vpcflowlogs/us-east-1/2026/12/06/readme.txt",
        f"AWSLogs/123456789012/cloudtrail/us-east-1/2026/12/06/{NAME}",
        # the account in the name differs from the one in the path
        f"AWSLogs/210987654321/vpcflowlogs/us-east-1/2026/12/06/{NAME}",
        "AWSLogs/123456789012/vpcflowlogs/us-east-1/2026/12/06/",
    ):
        assert flow_log_key(key) is None, key


def test_keys_are_url_decoded_plus_as_space_then_percent() -> None:
    body = json.dumps(
        {"Records": [record("AWSLogs/aws-account-id%3D1/a+b%2Bc.log.gz", etag='"e1"')]}
    )
    found = announced(body)
    assert found.objects == [
        ObjectRef("central", "AWSLogs/aws-account-id=1/a b+c.log.gz", "e1", 42)
    ]


def test_test_events_and_other_records_are_skipped_and_counted() -> None:
    test_event = {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": "2026-12-06T16:30:00.000Z",
        "Bucket": "central",
        "RequestId": "r",
        "HostId": "h",
    }
    assert announced(json.dumps(test_event)).test_events == 1
    removed = announced(json.dumps({"Records": [record("k", name="ObjectRemoved:Delete")]}))
    assert (removed.objects, removed.not_events) == ([], 1)
    newer = announced(json.dumps({"Records": [{**record("k"), "eventVersion": "3.0"}]}))
    assert newer.not_events == 1
    assert announced("not json").not_events == 1
    assert announced(json.dumps({"Records": [{"eventSource": "aws:s3"}]})).not_events == 1


def test_a_message_with_several_records() -> None:
    body = json.dumps({"Records": [record("a", etag="1"), record("b", etag="2")]})
    assert [o.done_id for o in announced(body).objects] == ["1 a", "2 b"]
