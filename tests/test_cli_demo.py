"""`flowexport demo`, the README's main command, end to end: real moto, PCE and kube
simulators and the real operator as subprocesses; exit codes and what it reports."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from flowexport.sim import demo as demo_command


def demo(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowexport", "demo", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.timeout(200)
def test_demo_delivers_every_connection_once_and_cleans_up() -> None:
    result = demo("--duration", "4", "--rate", "150", "--connections", "40", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Ready              True" in out
    assert "0 unexpected" in out
    assert "clean-up left 0 flow logs, 0 log groups and 0 workloads behind" in out
    summary = next(line for line in out.splitlines() if "distinct flows" in line)
    have, expected = summary.split("; ")[1].split(" expected")[0].split(" of ")
    assert have == expected and int(expected) > 30
    # Every flow is on the PCE's map: a labelled workload at both ends.
    assert "WorkloadsSynced    True    Synced: 52 workloads follow the VPC" in out
    assert "the PCE has 52 workloads (created 52, updated 0)" in out
    assert "[app=shop, env=demo, loc=us-east-1, role=client]" in out
    assert f"flows on the map (a workload at both ends): {have}" in out


@pytest.mark.timeout(200)
def test_demo_with_source_stream_reads_through_the_shards_and_cleans_up() -> None:
    result = demo(
        "--source", "stream", "--duration", "4", "--rate", "150", "--connections", "40",
        timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    # The names the operator makes carry a hash of the FlowExport's uid (issue 23, item 7).
    named = re.search(
        r"caught up with Kinesis stream (flowexport-security-demo-vpc-[0-9a-f]{10})", out
    )
    assert named is not None, out
    stream = named[1]
    assert "source stream: created the subscription role" in out
    assert "role/flowexport-cwl-to-kinesis" in out
    assert f"Ingesting          True    Ingesting: caught up with Kinesis stream {stream}" in out
    assert (
        f"source stream: Kinesis stream arn:aws:kinesis:us-east-1:123456789012:stream/{stream} "
        f"through subscription filter {stream}"
    ) in out
    # Every record written came through the stream's two shards, each of which read some.
    through = re.search(r"2 shards read (\d+) of the (\d+) records written", out)
    assert through is not None, out
    assert through[1] == through[2] and int(through[1]) > 300
    shard_reads = [int(n) for n in re.findall(r"shardId-\d+: read (\d+),", out)]
    assert len(shard_reads) == 2 and all(n > 0 for n in shard_reads)
    assert sum(shard_reads) == int(through[1])
    summary = next(line for line in out.splitlines() if "distinct flows" in line)
    have, expected = summary.split("; ")[1].split(" expected")[0].split(" of ")
    assert have == expected and int(expected) > 30
    assert "0 unexpected" in out
    assert f"flows on the map (a workload at both ends): {have}" in out
    assert "clean-up left 0 flow logs, 0 log groups and 0 workloads behind" in out
    assert "source stream: clean-up left 0 Kinesis streams and 0 subscription filters behind" in out


@pytest.mark.timeout(200)
def test_demo_with_source_s3_reads_objects_through_the_queue_and_cleans_up() -> None:
    result = demo(
        "--source", "s3", "--duration", "4", "--rate", "150", "--connections", "40",
        timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "source s3: created bucket demo-flow-logs" in out
    assert re.search(r"source s3: flow log fl-[0-9a-f]+ -> bucket demo-flow-logs", out), out
    assert "Ingesting          True    Ingesting: caught up with the queue's objects" in out
    done = re.search(r"(\d+) of the (\d+) objects written done, 0 failed", out)
    assert done is not None, out
    assert done[1] == done[2] and int(done[1]) >= 2
    written = re.search(r"records written (\d+), read (\d+),", out)
    assert written is not None and written[1] == written[2], out
    summary = next(line for line in out.splitlines() if "distinct flows" in line)
    have, expected = summary.split("; ")[1].split(" expected")[0].split(" of ")
    assert have == expected and int(expected) > 20
    assert "0 unexpected" in out
    assert f"flows on the map (a workload at both ends): {have}" in out
    assert "clean-up left 0 flow logs, 0 log groups and 0 workloads behind" in out
    assert "source s3: clean-up left 0 queues and 0 bucket notifications behind" in out


def test_stream_flows_that_no_shard_read_fail_the_demo(capsys: pytest.CaptureFixture[str]) -> None:
    """Flows at the PCE while status.shards read nothing: the stream path was not exercised."""
    flow = ("10.0.1.10", "10.0.2.11", 22, 6)
    workloads = [
        {"name": name, "interfaces": [{"address": address}], "label_texts": []}
        for name, address in (("client-1", flow[0]), ("server-1", flow[1]))
    ]
    pce = SimpleNamespace(flows=lambda: [flow], workloads=lambda: workloads)
    stack: Any = SimpleNamespace(pce=pce, workdir=Path("/tmp/demo"))
    status = {
        "conditions": [{"type": "Ready", "status": "True", "reason": "Ready"}],
        "counts": {"recordsRead": 10},
        "source": {"mode": "stream", "streamArn": "arn:x", "subscriptionFilter": "f"},
        "shards": {"shardId-000000000000": {"counts": {"recordsRead": 0}}},
    }

    class Fake(demo_command.Demo):
        def status(self) -> dict[str, Any]:
            return status

    fake = Fake(stack, "stream", written=10)
    assert demo_command._summary(fake, {flow}, {flow}, 1) == 1
    err = capsys.readouterr().err
    assert "1 flows reached the PCE but no shard of the Kinesis stream read a record" in err
    # The same status in mode poll is a success: the shards are not looked at.
    assert demo_command._summary(Fake(stack, "poll", written=10), {flow}, {flow}, 1) == 0


@pytest.mark.timeout(120)
def test_until_flows_not_reached_exits_1_with_the_reason() -> None:
    result = demo(
        "--duration",
        "2",
        "--rate",
        "50",
        "--connections",
        "5",
        "--until-flows",
        "1000",
        "--timeout",
        "12",
        "--keep",
        timeout=100,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "only 5 of 1000 flows reached the PCE in time" in result.stderr
    assert "operator log:" in result.stderr


def test_bad_arguments_are_usage_errors() -> None:
    result = demo("--rate", "0", timeout=60)
    assert result.returncode == 2
    assert "must be positive" in result.stderr
    result = demo("--source", "kinesis", timeout=60)
    assert result.returncode == 2
    assert "argument --source: invalid choice: 'kinesis'" in result.stderr
