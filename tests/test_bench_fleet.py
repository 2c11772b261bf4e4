"""bench/fleet.py: one entry point for the fleet benchmarks, and its judgement of the issue's
targets (the figures come from the benchmarks, run by hand; here the judging is checked)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

FLEET = Path(__file__).resolve().parents[1] / "bench" / "fleet.py"


def load_fleet() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_fleet", FLEET)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_fleet"] = module
    spec.loader.exec_module(module)
    return module


fleet = load_fleet()


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(FLEET), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def quota_result(**changes: Any) -> dict[str, Any]:
    result = {
        "variant": "budget",
        "n": 300,
        "rate": 5.0,
        "ready_s": 55.0,
        "ready_at_timeout": 300,
        "batch_s": 101.1,
        "uploaded": 300,
        "filter_calls": 892,
        "filter_throttled": 1,
        "filter_throttled_pct": 0.1,
        "ready_fell_back": 0,
        "peak_rss_mb": 272.0,
        "liveness_worst_s": 0.59,
        "liveness_failed": 0,
    }
    result.update(changes)
    return result


def test_help_names_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0, result.stderr
    for command in ("targets", "coverage", "quota"):
        assert command in result.stdout


@pytest.mark.parametrize(
    ("command", "option"), [("quota", "--variants"), ("coverage", "--operator")]
)
def test_a_command_hands_its_options_to_its_benchmark(command: str, option: str) -> None:
    result = run(command, "--help")
    assert result.returncode == 0, result.stderr
    assert option in result.stdout


def test_every_quota_target_met() -> None:
    found = fleet.quota_targets(quota_result())
    assert [t.met for t in found] == [True] * 6


@pytest.mark.parametrize(
    ("change", "missed"),
    [
        ({"ready_s": 97.5}, "all 300 Ready"),
        ({"ready_s": None, "ready_at_timeout": 122}, "all 300 Ready"),
        ({"batch_s": None, "uploaded": 212}, "new batch uploaded by every FlowExport"),
        ({"filter_throttled_pct": 5.1}, "FilterLogEvents throttled at 5/s"),
        ({"ready_fell_back": 1}, "Ready falling back"),
        ({"peak_rss_mb": 574.0}, "peak RSS"),
        ({"liveness_worst_s": 1.05}, "worst liveness"),
        ({"liveness_failed": 1}, "worst liveness"),
    ],
)
def test_a_missed_quota_target_is_the_only_one_not_met(change: dict[str, Any], missed: str) -> None:
    found = fleet.quota_targets(quota_result(**change))
    assert [t.name for t in found if not t.met] == [missed]


def test_coverage_is_judged_by_every_step() -> None:
    step = {"seconds": 10.8, "refreshes": 1, "calls_per_account": 4, "correct": True, "note": ""}
    result = {
        "accounts": 50,
        "regions": ["us-east-1", "eu-west-1"],
        "vpcs_per_account_region": 3,
        "steps": [
            {**step, "name": "apply"},
            {**step, "name": "steady"},
            {**step, "name": "churn"},
            {**step, "name": "report", "correct": False, "note": "missing 1"},
        ],
    }
    found = fleet.coverage_targets(result)
    assert [t.name for t in found if not t.met] == ["coverage correct after 'report'"]
    assert "50 accounts x 2 regions x 3 VPCs" in found[0].target


def test_the_last_json_document_is_found_after_log_lines() -> None:
    text = 'starting\n{"a": 1}\nnoise {"b": 2}\n[\n  {"c": 3}\n]\nbye\n'
    assert fleet.last_json(text) == [{"c": 3}]
    with pytest.raises(ValueError):
        fleet.last_json("no figures here\n")


@pytest.mark.soak  # both benchmarks, small, through moto and the operator: run by hand (-m soak)
def test_targets_runs_small() -> None:
    result = run(
        "targets",
        *("--accounts", "2", "--regions", "us-east-1", "--vpcs", "1", "--n", "2", "--rate", "2"),
        "--json",
        timeout=900,
    )
    assert result.returncode in (0, 1), result.stdout + result.stderr
    found = json.loads(result.stdout)
    names = {t["name"] for t in found}
    assert "all 2 Ready" in names and "full coverage from apply" in names
