"""Starting the operator: which namespace arguments make kopf watch the cluster; start-up
failures said in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flowexport.kube.runner import has_patterns
from flowexport.sim.kube import kubeconfig
from flowexport.sim.moto import free_ports


@pytest.mark.parametrize(
    ("namespaces", "expected"),
    [
        ([], False),
        (["security"], False),
        (["security", "payments"], False),
        (["sec*"], True),
        (["team-?"], True),
        (["!kube-system"], True),
        (["a,b"], True),
        (["security", "prod-*"], True),
    ],
)
def test_only_patterns_need_the_cluster_scan(namespaces: list[str], expected: bool) -> None:
    assert has_patterns(namespaces) is expected


def _run_operator(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowexport", "run", "-n", "security"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )


def test_without_credentials_run_says_so_in_one_line(tmp_path: Path) -> None:
    result = _run_operator({"KUBECONFIG": str(tmp_path / "absent"), "HOME": str(tmp_path)})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [lines[0]] and "no Kubernetes credentials" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_api_server_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(yaml.safe_dump(kubeconfig(f"http://127.0.0.1:{free_ports(1)[0]}")))
    result = _run_operator({"KUBECONFIG": str(config)})
    assert result.returncode == 2
    assert "cannot reach the Kubernetes API" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--replica-id", "Not_A_Label"], "--replica-id must be a DNS label"),
        (["--shard-namespace", "ops", "--shard-lease-seconds", "1"], "at least 3"),
        (["--allowed-pce-host", "https://pce.example.com"], "is not HOST or HOST:PORT"),
        (["--allowed-pce-host", "pce.example.com:99999"], "invalid port"),
        (["--s3-visibility-seconds", "2"], "--s3-visibility-seconds: the visibility timeout"),
        (["-n", "team-*", "--hold-namespace-access", "fx"], "needs namespaces by name"),
    ],
)
def test_bad_sharding_flags_are_said_before_anything_starts(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flowexport", "run", "-n", "security", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KUBECONFIG": str(tmp_path / "absent")},
        check=False,
    )
    assert result.returncode == 2 and message in result.stderr, result.stderr
