"""`flowexport sync` as a user runs it: real processes for moto, the PCE simulator and sync."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import yaml

from tests.cloud import KEYS, REGION
from tests.flowlines import put_connections
from tests.moto_server import reset
from tests.processes import flowexport_server

GROUP = "/flowexport/sync"


@pytest.fixture(scope="module")
def pce_sim() -> Iterator[dict[str, Any]]:
    with flowexport_server(
        "pce-sim", "--api-key", "api_sync", "--api-secret", "sync-secret"
    ) as ready:
        yield ready


@pytest.fixture
def world(moto_url: str, pce_sim: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    reset(moto_url)
    httpx.post(f"{pce_sim['url']}/_sim/reset")
    kw = dict(
        endpoint_url=moto_url,
        region_name=REGION,
        aws_access_key_id=KEYS.access_key_id,
        aws_secret_access_key=KEYS.secret_access_key,
    )
    vpc = boto3.client("ec2", **kw).create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    role = boto3.client("iam", **kw).create_role(RoleName="d", AssumeRolePolicyDocument="{}")
    return {
        "moto": moto_url,
        "pce": pce_sim,
        "vpc": vpc,
        "role": role["Role"]["Arn"],
        "logs": boto3.client("logs", **kw),
        "ec2": boto3.client("ec2", **kw),
        "tmp": tmp_path,
    }


def manifest(world: dict[str, Any], **spec_overrides: Any) -> Path:
    spec: dict[str, Any] = {
        "aws": {
            "region": REGION,
            "vpcId": world["vpc"],
            "logGroupName": GROUP,
            "deliverLogsRoleArn": world["role"],
            "endpointUrl": world["moto"],
            "credentialsSecretRef": {"name": "aws-keys"},
        },
        "pce": {
            "url": world["pce"]["url"],
            "orgId": 1,
            "credentialsSecretRef": {"name": "pce-key"},
        },
        "ingestion": {"startFrom": "earliest", "pollIntervalSeconds": 1, "batchSize": 10},
    }
    for path, value in spec_overrides.items():
        node = spec
        *parents, leaf = path.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    docs = [
        {
            "apiVersion": "flowexport.io/v1alpha1",
            "kind": "FlowExport",
            "metadata": {"name": "prod", "namespace": "security", "generation": 2},
            "spec": spec,
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "pce-key"},
            "type": "kubernetes.io/basic-auth",
            "stringData": {"username": "api_sync", "password": "sync-secret"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "aws-keys"},
            "stringData": {
                "aws_access_key_id": KEYS.access_key_id,
                "aws_secret_access_key": KEYS.secret_access_key,
            },
        },
    ]
    path: Path = world["tmp"] / "flowexport.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


def sync(path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowexport", "sync", "-f", str(path), "--settle", "0", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def status(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(result.stdout)
    return value


def conditions(doc: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in doc["conditions"]}


def write_flows(
    world: dict[str, Any], count: int, start: int = 0, stream: str = "eni-a-all"
) -> None:
    put_connections(world["logs"], GROUP, count, start, stream)


def received(world: dict[str, Any]) -> list[list[Any]]:
    flows: list[list[Any]] = httpx.get(f"{world['pce']['url']}/_sim/flows").json()["flows"]
    return flows


def test_once_subscribes_ingests_and_resumes(world: dict[str, Any]) -> None:
    path = manifest(world)
    state = world["tmp"] / "state.json"
    first = sync(path, "--once", "--state", str(state))
    assert first.returncode == 0, first.stderr
    doc = status(first)
    assert conditions(doc)["Ready"] == ("True", "Ready")
    assert doc["observedGeneration"] == 2
    assert doc["flowLogId"].startswith("fl-")
    assert doc["logGroupArn"].endswith(f":log-group:{GROUP}")
    write_flows(world, 25)
    time.sleep(0.01)
    second = sync(path, "--once", "--state", str(state))
    assert second.returncode == 0, second.stderr
    assert status(second)["counts"]["flowsUploaded"] == 25
    assert len(received(world)) == 25
    write_flows(world, 5, start=25)
    time.sleep(0.01)
    third = sync(path, "--once", "--state", str(state))
    counts = status(third)["counts"]
    assert (counts["recordsRead"], counts["flowsUploaded"]) == (30, 30)
    assert sorted(f[0] for f in received(world)) == sorted(f"10.0.0.{i + 1}" for i in range(30))
    cursor = json.loads(state.read_text())["cursor"]
    assert {k for k, v in cursor.items() if v is not None} == {
        "ingestedThrough",
        "window",
        "logGroup",
    }
    assert cursor["logGroup"].endswith(":log-group:/flowexport/sync")
    assert "sync-secret" not in first.stdout + first.stderr + second.stderr + state.read_text()


def test_rejected_flows_exit_1(world: dict[str, Any]) -> None:
    path = manifest(world)
    assert sync(path, "--once").returncode == 0
    write_flows(world, 3)
    httpx.post(f"{world['pce']['url']}/_sim/faults", json={"reject_flows_containing": "10.0.0.2,"})
    time.sleep(0.01)
    result = sync(path, "--once")
    assert result.returncode == 1
    assert status(result)["counts"]["flowsFailed"] == 1


@pytest.mark.parametrize(
    ("overrides", "message", "condition"),
    [
        ({"pce.orgId": 0}, "spec.pce.orgId", None),
        (
            {"aws.vpcId": "vpc-0123456789abcdef0"},
            "does not exist",
            ("SubscriptionReady", "VPCNotFound"),
        ),
        (
            {"aws.manageLogGroup": False},
            "manageLogGroup",
            ("SubscriptionReady", "LogGroupNotFound"),
        ),
        ({"pce.orgId": 7}, "org id (7)", ("PCEReachable", "PCENotFound")),
    ],
)
def test_configuration_errors_exit_2(
    world: dict[str, Any],
    overrides: dict[str, Any],
    message: str,
    condition: tuple[str, str] | None,
) -> None:
    result = sync(manifest(world, **overrides), "--once")
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    if condition is not None:
        type_, reason = condition
        assert conditions(status(result))[type_] == ("False", reason)
        assert conditions(status(result))["Ready"][0] == "False"


def start_sync(path: Path, state: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flowexport",
            "sync",
            "-f",
            str(path),
            "--settle",
            "0",
            "--state",
            str(state),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def stop_sync(process: subprocess.Popen[str]) -> tuple[str, str, float]:
    """SIGTERM, then its output and how long it took to exit (killed after 30 s)."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
    return out, err, time.monotonic() - started


def wait_for(check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_long_running_sync_stops_cleanly_on_sigterm(world: dict[str, Any]) -> None:
    path = manifest(world)
    state = world["tmp"] / "state.json"
    process = start_sync(path, state)
    try:
        wait_for(state.exists)
        write_flows(world, 12)
        wait_for(lambda: len(received(world)) >= 12)
        assert len(received(world)) == 12
    finally:
        out, err, _ = stop_sync(process)
    assert process.returncode == 0, err
    assert json.loads(out)["counts"]["flowsUploaded"] == 12
    assert json.loads(state.read_text())["counts"]["flowsUploaded"] == 12


def test_sigterm_ends_sync_within_10_s_while_the_pce_hangs(world: dict[str, Any]) -> None:
    pce = world["pce"]["url"]
    path = manifest(world)
    state = world["tmp"] / "state.json"
    process = start_sync(path, state)
    try:
        wait_for(state.exists)
        hang = {"delay_seconds": 120, "path_contains": "bulk_traffic_flows"}
        httpx.post(f"{pce}/_sim/faults", json=hang).raise_for_status()
        write_flows(world, 5)
        uploads = f"{pce}/_sim/requests"

        def uploading() -> bool:
            requests = httpx.get(uploads).json()
            return any("bulk_traffic_flows" in r["path"] for r in requests)

        wait_for(uploading)
    finally:
        _, err, took = stop_sync(process)
    assert process.returncode == 0, err
    assert took < 10, f"sync took {took:.1f}s to stop"
    assert json.loads(state.read_text())["counts"]["flowsUploaded"] == 0  # nothing claimed
    httpx.post(f"{pce}/_sim/faults", json={}).raise_for_status()
    resumed = sync(path, "--once", "--state", str(state))
    assert resumed.returncode == 0, resumed.stderr
    assert len({tuple(f) for f in received(world)}) == 5, "nothing lost"


def test_once_with_workloads_makes_them_before_the_flows_and_twice_makes_no_copy(
    world: dict[str, Any],
) -> None:
    ec2 = boto3.client(
        "ec2",
        endpoint_url=world["moto"],
        region_name=REGION,
        aws_access_key_id=KEYS.access_key_id,
        aws_secret_access_key=KEYS.secret_access_key,
    )
    subnet = ec2.create_subnet(VpcId=world["vpc"], CidrBlock="10.0.0.0/24")["Subnet"]
    ec2.create_network_interface(
        SubnetId=subnet["SubnetId"],
        PrivateIpAddress="10.0.0.1",  # the client of the first connection written
        TagSpecifications=[
            {"ResourceType": "network-interface", "Tags": [{"Key": "Name", "Value": "web"}]}
        ],
    )
    path = manifest(world, workloads={"mode": "Sync", "labels": {"env": "prod"}})
    state = world["tmp"] / "state.json"
    assert sync(path, "--once", "--state", str(state)).returncode == 0
    write_flows(world, 2)
    time.sleep(0.01)
    first = sync(path, "--once", "--state", str(state))
    assert first.returncode == 0, first.stderr
    doc = status(first)
    assert conditions(doc)["WorkloadsSynced"] == ("True", "Synced")
    assert doc["workloads"]["managed"] == 1
    workloads = httpx.get(f"{world['pce']['url']}/_sim/workloads").json()
    assert [(w["name"], w["interfaces"][0]["address"]) for w in workloads] == [("web", "10.0.0.1")]
    requests = httpx.get(f"{world['pce']['url']}/_sim/requests").json()
    paths = [r["path"].rsplit("/", 1)[-1] for r in requests if r["method"] != "GET"]
    assert paths.index("bulk_create") < paths.index("bulk_traffic_flows")
    again = status(sync(path, "--once", "--state", str(state)))
    assert (again["workloads"]["created"], again["workloads"]["managed"]) == (0, 1)
    assert len(httpx.get(f"{world['pce']['url']}/_sim/workloads").json()) == 1


def test_once_in_stream_mode_polls_up_to_the_filter_then_reads_the_stream(
    world: dict[str, Any],
) -> None:
    role = "arn:aws:iam::123456789012:role/cwl-to-kinesis"
    path = manifest(world, source={"mode": "stream", "stream": {"subscriptionRoleArn": role}})
    state = world["tmp"] / "stream-state.json"
    first = sync(path, "--once", "--state", str(state))
    assert first.returncode == 0, first.stderr
    doc = status(first)
    assert conditions(doc)["Ready"] == ("True", "Ready")
    assert doc["source"]["mode"] == "stream" and doc["source"]["since"] > 0
    write_flows(world, 12)
    second = sync(path, "--once", "--state", str(state))
    assert second.returncode == 0, second.stderr
    doc = status(second)
    assert doc["counts"]["flowsUploaded"] == 12
    (entry,) = doc["shards"].values()
    assert entry["millisBehindLatest"] == 0 and entry["cursor"]["sequenceNumber"]
    # The shard's upload is the latest (the log group uploaded nothing), and its lag is the lag.
    assert doc["lastUploadTime"] == entry["lastUploadTime"] and doc["lagSeconds"] == 0
    write_flows(world, 3, start=12)
    third = sync(path, "--once", "--state", str(state))
    assert status(third)["counts"]["flowsUploaded"] == 15
    assert len(received(world)) == 15  # nothing twice across the three runs
    # Back to poll, as the operator does it: the log group resumes before the earliest shard
    # checkpoint, the shards' counts and window kept, so nothing is uploaded twice.
    polling = sync(manifest(world), "--once", "--state", str(state))
    assert polling.returncode == 0, polling.stderr
    doc = status(polling)
    assert doc["source"] == {"mode": "poll"} and "shards" not in doc
    assert doc["counts"]["flowsUploaded"] == 15
    assert len(received(world)) == 15


def test_dry_run_changes_nothing_and_prints_what_it_would_upload(world: dict[str, Any]) -> None:
    path = manifest(world)
    # Nothing in AWS yet: a dry run observes only, so it creates nothing and says what is
    # missing.
    missing = sync(path, "--once", "--dry-run")
    assert missing.returncode == 2, missing.stderr
    assert world["logs"].describe_log_groups(logGroupNamePrefix=GROUP)["logGroups"] == []
    state = world["tmp"] / "dry-state.json"
    assert sync(path, "--once", "--state", str(state)).returncode == 0  # creates them
    saved = state.read_text()
    flow_logs = world["ec2"].describe_flow_logs()["FlowLogs"]
    write_flows(world, 12)
    dry = sync(path, "--once", "--dry-run", "--state", str(state))
    assert dry.returncode == 0, dry.stderr
    would = [line for line in dry.stderr.splitlines() if line.startswith("would upload: ")]
    assert sorted(would) == sorted(
        f"would upload: 10.0.0.{i + 1},10.1.0.9,443,6" for i in range(12)
    )
    assert status(dry)["counts"]["flowsUploaded"] == 12  # what would have been uploaded
    assert received(world) == []
    assert state.read_text() == saved  # no checkpoint
    assert world["ec2"].describe_flow_logs()["FlowLogs"] == flow_logs
    # The real run then uploads them all.
    real = sync(path, "--once", "--state", str(state))
    assert real.returncode == 0 and len(received(world)) == 12


def test_mode_s3_once_drains_the_queue_and_names_an_unreadable_object(
    world: dict[str, Any],
) -> None:
    kw = dict(
        endpoint_url=world["moto"],
        region_name=REGION,
        aws_access_key_id=KEYS.access_key_id,
        aws_secret_access_key=KEYS.secret_access_key,
    )
    s3 = boto3.client("s3", **kw)
    s3.create_bucket(Bucket="central-flow-logs")
    path = manifest(
        world,
        **{
            "source": {"mode": "s3", "s3": {"bucket": "central-flow-logs"}},
            "aws.vpcId": None,
            "aws.logGroupName": None,
        },
    )
    first = sync(path, "--once")  # creates the queue and the notification; nothing to read
    assert first.returncode == 0, first.stderr
    assert status(first)["source"]["mode"] == "s3"
    fmt = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets "
    fmt += "bytes start end action log-status"
    prefix = "AWSLogs/123456789012/vpcflowlogs/us-east-1/2026/12/06/"

    def name(n: int) -> str:
        return f"{prefix}123456789012_vpcflowlogs_us-east-1_fl-1_20261206T16{n:02d}Z_h{n}.log.gz"

    for n in range(2):
        lines = [fmt] + [
            f"2 123456789012 eni-1 10.0.{n}.{i + 1} 10.1.0.9 {40000 + i} 5432 6 1 60 "
            f"1765000000 1765000060 ACCEPT OK"
            for i in range(10)
        ]
        s3.put_object(
            Bucket="central-flow-logs", Key=name(n), Body=gzip.compress("\n".join(lines).encode())
        )
    s3.put_object(Bucket="central-flow-logs", Key=name(7), Body=b"\x1f\x8b not gzip")
    second = sync(path, "--once")
    assert second.returncode == 1, second.stderr
    assert name(7) in second.stderr
    assert len(received(world)) == 20
    source = status(second)["source"]
    assert (source["objectsDone"], source["objectsFailed"]) == (2, 1)
    assert conditions(status(second))["Ingesting"] == ("False", "ObjectUnreadable")


def test_sync_assumes_role_arn_with_the_external_id_and_the_flowexports_session(
    world: dict[str, Any],
) -> None:
    """Outside a cluster no AccountGrant applies: sync runs as the user's identity, assumes
    spec.aws.roleArn with --external-id and the session name of the manifest's FlowExport."""
    role = "arn:aws:iam::123456789012:role/flowexport-prod"
    result = sync(manifest(world, **{"aws.roleArn": role}), "--once", "--external-id", "ext-cli")
    assert result.returncode == 0, result.stderr
    assert conditions(status(result))["SubscriptionReady"] == ("True", "Subscribed")
    data = httpx.get(f"{world['moto']}/moto-api/data.json", timeout=10).json()
    sessions = {(r["session_name"], r["external_id"], r["role_arn"])
                for r in data["sts"]["AssumedRole"]}  # fmt: skip
    assert ("fx-security-prod", "ext-cli", role) in sessions
    # accountId alone assumes nothing outside a cluster: the user's own identity works
    alone = sync(manifest(world, **{"aws.accountId": "123456789012"}), "--once")
    assert alone.returncode == 0, alone.stderr
