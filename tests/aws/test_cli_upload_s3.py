"""`flowexport upload s3://bucket/prefix --since TIME`: a backfill from S3 by listing, no queue,
as a real process against moto server and the PCE simulator."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
from typing import Any

from flowexport.aws.s3 import list_flow_log_objects
from flowexport.core.logformat import DEFAULT_V2_FORMAT, PIPELINE_FORMAT, LogFormat
from tests.cloud import KEYS, REGION, Cloud
from tests.flowlines import line
from tests.flowparquet import write_parquet
from tests.test_cli_upload import SECRET, clean, received, sim, summary

__all__ = ["clean", "sim"]

BUCKET = "archive-flow-logs"
ACCOUNT = "123456789012"


def key(minute: int, hour: int = 16, prefix: str = "", ext: str = "gz", hive: bool = False) -> str:
    name = (
        f"{ACCOUNT}_vpcflowlogs_{REGION}_fl-0123456789abcdef0_20261206T{hour:02d}{minute:02d}Z_"
        f"h{hour}{minute}.log.{ext}"
    )
    if hive:
        return (
            f"{prefix}AWSLogs/aws-account-id={ACCOUNT}/aws-service=vpcflowlogs/"
            f"aws-region={REGION}/year=2026/month=12/day=06/hour={hour:02d}/{name}"
        )
    return f"{prefix}AWSLogs/{ACCOUNT}/vpcflowlogs/{REGION}/2026/12/06/{name}"


def lines(first: int, count: int, fmt: LogFormat) -> list[str]:
    return [
        line(fmt, srcaddr=f"10.9.{i // 200}.{i % 200 + 1}", dstaddr="10.1.0.9", srcport=40000 + i)
        for i in range(first, first + count)
    ]


def text(first: int, count: int, fmt: LogFormat = DEFAULT_V2_FORMAT) -> bytes:
    body = "\n".join([" ".join(fmt.fields), *lines(first, count, fmt)]) + "\n"
    return gzip.compress(body.encode())


def parquet(first: int, count: int, fmt: LogFormat = PIPELINE_FORMAT) -> bytes:
    out = io.BytesIO()
    write_parquet(out, lines(first, count, fmt), fmt, row_group_size=7)
    return out.getvalue()


def upload_s3(sim: dict[str, Any], moto_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "PCE_API_KEY": "api_cli",
        "PCE_API_SECRET": SECRET,
        "AWS_ACCESS_KEY_ID": KEYS.access_key_id,
        "AWS_SECRET_ACCESS_KEY": KEYS.secret_access_key,
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "flowexport",
            "upload",
            "--pce-url",
            sim["url"],
            "--org",
            "1",
            "--ca-bundle",
            sim["ca_file"],
            "--endpoint-url",
            moto_url,
            "--region",
            REGION,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        check=False,
    )


def test_a_prefix_is_listed_and_its_flow_log_objects_since_a_time_uploaded(
    cloud: Cloud, sim: dict[str, Any], moto_url: str
) -> None:
    s3 = cloud.raw("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=key(0, hour=15, prefix="logs/"), Body=text(900, 5))  # before
    s3.put_object(Bucket=BUCKET, Key=key(5, prefix="logs/"), Body=text(0, 10))
    s3.put_object(Bucket=BUCKET, Key=key(10, prefix="logs/", hive=True), Body=text(10, 10))
    s3.put_object(Bucket=BUCKET, Key=key(15, prefix="logs/", ext="parquet"), Body=parquet(20, 30))
    s3.put_object(Bucket=BUCKET, Key=key(0, hour=18, prefix="logs/"), Body=text(800, 5))  # after
    s3.put_object(Bucket=BUCKET, Key="logs/AWSLogs/README.txt", Body=b"not a flow log")
    s3.put_object(Bucket=BUCKET, Key=key(20), Body=text(700, 5))  # outside the prefix
    result = upload_s3(
        sim,
        moto_url,
        "--since",
        "2026-12-06T16:00:00Z",
        "--until",
        "2026-12-06T17:00:00Z",
        f"s3://{BUCKET}/logs/",
    )
    assert result.returncode == 0, result.stderr
    report = summary(result)
    assert report["s3"] == {"objects": 3, "not_flow_logs": 1, "outside_time_range": 2}
    assert report["records"] == 52 and report["skipped"] == {"header": 2}  # two text objects
    assert report["flows"] == report["uploaded"] == 50
    flows = received(sim)
    assert len(flows) == 50
    assert {f[0] for f in flows} == {f"10.9.0.{i + 1}" for i in range(50)}


def test_an_unreadable_object_is_named_the_others_uploaded_exit_1(
    cloud: Cloud, sim: dict[str, Any], moto_url: str
) -> None:
    s3 = cloud.raw("s3")
    s3.create_bucket(Bucket=BUCKET)
    bad = key(5)
    s3.put_object(Bucket=BUCKET, Key=bad, Body=text(0, 50)[:200])  # truncated gzip
    s3.put_object(Bucket=BUCKET, Key=key(10), Body=text(100, 10))
    result = upload_s3(sim, moto_url, "--since", "2026-12-06", f"s3://{BUCKET}")
    assert result.returncode == 1
    assert f"s3://{BUCKET}/{bad}" in result.stderr
    report = summary(result)
    assert report["file_errors"] == 1 and report["uploaded"] >= 10
    assert {f"10.9.0.{i + 101}" for i in range(10)} <= {f[0] for f in received(sim)}


def test_usage_errors(cloud: Cloud, sim: dict[str, Any], moto_url: str) -> None:
    missing = upload_s3(sim, moto_url, f"s3://{BUCKET}/")
    assert missing.returncode == 2 and "--since" in missing.stderr
    wrong = upload_s3(sim, moto_url, "--since", "yesterday", f"s3://{BUCKET}/")
    assert wrong.returncode == 2 and "RFC 3339" in wrong.stderr
    gone = upload_s3(sim, moto_url, "--since", "2026-12-06", "s3://no-such-bucket/")
    assert gone.returncode == 2 and "no-such-bucket" in gone.stderr


def test_listing_follows_every_page(cloud: Cloud) -> None:
    s3 = cloud.raw("s3")
    s3.create_bucket(Bucket=BUCKET)
    for minute in range(0, 50, 5):
        s3.put_object(Bucket=BUCKET, Key=key(minute), Body=text(minute, 1))
    found = list_flow_log_objects(cloud.clients, BUCKET, "AWSLogs/", 0, page_size=3)
    assert len(found.objects) == 10
    assert [o.key for o in found.objects] == sorted(o.key for o in found.objects)
