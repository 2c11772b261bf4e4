"""`flowexport demo`, the README's main command, end to end: real moto, PCE and kube
simulators and the real operator as subprocesses; exit codes and what it reports."""

from __future__ import annotations

import subprocess
import sys

import pytest


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
