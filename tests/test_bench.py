"""The benchmarks stay runnable by hand: `bench/operator.py`, named like the standard library's
`operator`, shadows it for no script in `bench/`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_the_operator_benchmark_starts() -> None:
    result = run(str(BENCH / "operator.py"), "--help")
    assert result.returncode == 0, result.stderr
    assert "--baseline-source" in result.stdout and "--idle-seconds" in result.stdout


def test_the_core_benchmark_runs_beside_it() -> None:
    result = run(str(BENCH / "core.py"), "--records", "2000", "--repeat", "1", "--json")
    assert result.returncode == 0, result.stderr
    assert '"core_v2"' in result.stdout


def test_the_standard_library_operator_is_the_real_one_from_bench() -> None:
    code = "import operator, collections; print(operator.__file__, operator.itemgetter(1)('ab'))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=BENCH,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    path, item = result.stdout.split()
    assert Path(path).parent != BENCH and item == "b"


def test_the_workloads_benchmark_runs_small() -> None:
    result = run(str(BENCH / "workloads.py"), "--enis", "8", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    steps = {s["name"]: s for s in report["steps"]}
    assert steps["first"]["counts"]["created"] == 8
    assert steps["again"]["by_kind"] == {"GET labels": 1, "GET workloads": 1}
    assert steps["baseline"]["by_kind"]["GET workloads"] == 8


def test_the_stream_benchmark_runs_small() -> None:
    result = run(
        str(BENCH / "stream.py"),
        *("--records", "120", "--batch", "10", "--shards", "1,2,4", "--poll", "0:1"),
        *("--rate", "40", "--latency-seconds", "1", "--timeout", "60", "--json"),
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    runs = {(r["mode"], r["shards"]): r for r in report["runs"]}
    assert set(runs) == {("poll", None), ("stream", 1), ("stream", 2), ("stream", 4)}
    for found in runs.values():
        assert found["errors"] == [], found["errors"]
        backlog, steady = found["backlog"], found["steady"]
        assert backlog["accepted"] == 120 and backlog["records_per_s"] > 0
        assert sum(w["records"] for w in backlog["workers"]) == 120
        assert steady["accepted"] == 40 and steady["latency_p50_s"] is not None
        assert steady["latency_p95_s"] >= steady["latency_p50_s"]
    assert len(runs[("stream", 4)]["backlog"]["workers"]) <= 4
    assert len(report["ratios"]) == 3


def test_the_fleet_coverage_benchmark_starts() -> None:
    result = run(str(BENCH / "fleet_coverage.py"), "--help")
    assert result.returncode == 0, result.stderr
    assert "--accounts" in result.stdout and "--operator" in result.stdout


def test_the_fleet_quota_benchmark_starts() -> None:
    result = run(str(BENCH / "fleet_quota.py"), "--help")
    assert result.returncode == 0, result.stderr
    assert "--variants" in result.stdout and "--rate" in result.stdout


@pytest.mark.soak  # ~80 s of the operator behind the throttling proxy: run by hand (-m soak)
def test_the_fleet_quota_benchmark_runs_small() -> None:
    result = run(
        str(BENCH / "fleet_quota.py"),
        *("--n", "2", "--rate", "2", "--batch", "2", "--variants", "budget,no-budget"),
        *("--timeout", "120", "--json"),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    runs = {r["variant"]: r for r in json.loads(result.stdout)}
    assert set(runs) == {"budget", "no-budget"}
    for found in runs.values():
        assert found["ready_s"] is not None and found["batch_s"] is not None
        assert found["uploaded"] == 2 and found["ready_fell_back"] == 0
        assert found["filter_calls"] > 0
