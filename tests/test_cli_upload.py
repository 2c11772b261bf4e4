"""`flowexport pce-sim` and `flowexport upload`, as real processes talking over loopback."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.processes import flowexport_server

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "flowlogs" / "sample.log"
SECRET = "upload-test-secret-9d8c"


@pytest.fixture(scope="module")
def sim() -> Iterator[dict[str, Any]]:
    with flowexport_server(
        "pce-sim", "--tls", "--api-key", "api_cli", "--api-secret", SECRET
    ) as ready:
        yield ready


#: Credentials for runs against a PCE that never checks them.
KEYS = {"PCE_API_KEY": "api_x", "PCE_API_SECRET": "x"}


@pytest.fixture(autouse=True)
def clean(sim: dict[str, Any]) -> None:
    httpx.post(f"{sim['url']}/_sim/reset", verify=False)


def upload(
    sim: dict[str, Any],
    *args: str,
    secret: str = SECRET,
    ca: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PCE_API_KEY": "api_cli", "PCE_API_SECRET": secret}
    if env is not None:
        environment = {**os.environ, **env}
    tls = ["--ca-bundle", sim["ca_file"]] if ca else []
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
            *tls,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        check=False,
    )


def summary(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    line = next(x for x in reversed(result.stderr.splitlines()) if x.startswith("{"))
    value: dict[str, Any] = json.loads(line)
    return value


def received(sim: dict[str, Any]) -> list[list[Any]]:
    flows: list[list[Any]] = httpx.get(f"{sim['url']}/_sim/flows", verify=False).json()["flows"]
    return flows


def test_simulator_ready_line(sim: dict[str, Any]) -> None:
    assert sim["url"].startswith("https://127.0.0.1:")
    assert sim["api_key"] == "api_cli"
    assert "api_secret" not in sim, "a secret given by the user is not echoed"
    assert Path(sim["ca_file"]).read_text().startswith("-----BEGIN CERTIFICATE-----")


def test_upload_everything_accepted(sim: dict[str, Any], tmp_path: Path) -> None:
    result = upload(sim, "--actions", "ACCEPT,REJECT", "--batch-size", "4", str(SAMPLE))
    assert result.returncode == 0, result.stderr
    report = summary(result)
    assert report["flows"] == report["uploaded"] == 9
    assert report["failed"] == 0
    assert report["batches"] == 3
    assert report["records"] == 25
    assert ["10.0.1.15", "10.0.2.40", 5432, 6] in received(sim)
    assert len(received(sim)) == 9
    assert "\r" not in result.stderr, "no progress bar when stderr is not a terminal"
    assert SECRET not in result.stderr + result.stdout


def test_upload_with_workloads(sim: dict[str, Any]) -> None:
    parsed = subprocess.run(
        [sys.executable, "-m", "flowexport", "parse", str(SAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    addresses = {ip for line in parsed.stdout.splitlines() for ip in line.split(",")[:2]}
    result = upload(sim, "--ensure-workloads", str(SAMPLE))
    assert result.returncode == 0, result.stderr
    expected = {"existing": 0, "created": len(addresses), "failed": 0}
    assert summary(result)["workloads"] == expected
    again = upload(sim, "--ensure-workloads", str(SAMPLE))
    assert summary(again)["workloads"] == {"existing": len(addresses), "created": 0, "failed": 0}
    workloads = httpx.get(f"{sim['url']}/_sim/workloads", verify=False).json()
    assert {w["external_data_set"] for w in workloads} == {"flowexport"}


def test_some_flows_rejected_exit_1(sim: dict[str, Any]) -> None:
    httpx.post(
        f"{sim['url']}/_sim/faults", json={"reject_flows_containing": "10.0.2.40"}, verify=False
    )
    result = upload(sim, str(SAMPLE))
    assert result.returncode == 1
    report = summary(result)
    assert report["failed"] == 1
    assert report["uploaded"] == report["flows"] - 1
    assert report["failed_flows_sample"] == ["10.0.1.15,10.0.2.40,5432,6"]


def test_transient_failures_are_retried(sim: dict[str, Any]) -> None:
    faults = {
        "fail_first": 2,
        "throttle_first": 1,
        "retry_after": 0.2,
        "path_contains": "bulk_traffic_flows",
    }
    httpx.post(f"{sim['url']}/_sim/faults", json=faults, verify=False)
    result = upload(sim, str(SAMPLE))
    assert result.returncode == 0, result.stderr
    assert summary(result)["retries"] == 3


@pytest.mark.parametrize(
    ("kwargs", "args", "message"),
    [
        ({"secret": "wrong"}, [], "rejected the API key"),
        ({"ca": False}, [], "supply its CA bundle"),
        ({"env": {"PCE_API_KEY": "", "PCE_API_SECRET": ""}}, [], "set PCE_API_KEY"),
        (
            {"env": {"PCE_API_KEY": "api_cli:pasted", "PCE_API_SECRET": "x"}},
            [],
            "cannot carry",
        ),
        ({}, ["--batch-size", "1001"], "between 1 and 1000"),
        ({}, ["--format", "${srcaddr} ${bogus}"], "bogus"),
    ],
)
def test_usage_auth_and_tls_errors_exit_2(
    sim: dict[str, Any], kwargs: dict[str, Any], args: list[str], message: str
) -> None:
    result = upload(sim, *args, str(SAMPLE), **kwargs)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_format_without_the_fields_a_flow_needs_exits_3_before_any_upload(
    sim: dict[str, Any],
) -> None:
    result = upload(sim, "--format", "${srcaddr}", str(SAMPLE))
    assert result.returncode == 3
    assert "cannot use --format: log format lacks field(s)" in result.stderr
    assert httpx.get(f"{sim['url']}/_sim/uploads", verify=False).json() == []


def test_unreachable_pce_exit_2(tmp_path: Path) -> None:
    nowhere = {"url": "http://127.0.0.1:9"}
    result = upload(nowhere, "--retries", "1", str(SAMPLE), ca=False, env=KEYS)
    assert result.returncode == 2
    assert "unavailable" in result.stderr and "connection failed" in result.stderr


def test_plain_http_to_a_remote_pce_is_refused() -> None:
    remote = {"url": "http://pce.example.com"}
    result = upload(remote, str(SAMPLE), ca=False, env=KEYS)
    assert result.returncode == 2
    assert "only allowed for loopback" in result.stderr


def test_a_failure_part_way_reports_what_the_pce_had_accepted() -> None:
    # The PCE answers two requests a minute; the third batch fails with no retries left.
    with flowexport_server(
        "pce-sim", "--tls", "--api-key", "api_cli", "--api-secret", SECRET, "--rate-limit", "2"
    ) as limited:
        httpx.post(
            f"{limited['url']}/_sim/faults",
            json={"reject_flows_containing": "10.0.2.40"},
            verify=False,
        )
        result = upload(limited, "--batch-size", "2", "--retries", "0", str(SAMPLE))
        assert len(received(limited)) == 3
    assert result.returncode == 2
    report = summary(result)
    shown = {key: report[key] for key in ("flows", "uploaded", "failed", "batches", "reason")}
    assert shown == {
        "flows": 7,
        "uploaded": 3,
        "failed": 1,
        "batches": 2,
        "reason": "PCEUnavailable",
    }
    assert report["failed_flows_sample"] == ["10.0.1.15,10.0.2.40,5432,6"]
    message = result.stderr.splitlines()[-1]
    assert (
        "before that the PCE had accepted 3 of the 7 flows and rejected 1, in 2 batches" in message
    )


def test_a_damaged_file_is_reported_and_the_others_uploaded(
    sim: dict[str, Any], tmp_path: Path
) -> None:
    truncated = tmp_path / "truncated.log.gz"
    truncated.write_bytes(gzip.compress(SAMPLE.read_bytes())[:-30])
    result = upload(sim, str(truncated), str(tmp_path / "missing.log"), str(SAMPLE))
    assert result.returncode == 1
    assert f"cannot read all of {truncated}: the gzip data is truncated" in result.stderr
    assert "missing.log: No such file or directory" in result.stderr
    report = summary(result)
    assert report["file_errors"] == 2
    assert report["uploaded"] == report["flows"] == 7
    assert len(received(sim)) == 7
