"""Fleet scope at the issue's sizes, measured (run by hand; issue 27): one entry point.

    python bench/fleet.py targets [--accounts 50] [--regions us-east-1,eu-west-1] [--vpcs 3]
                                  [--n 300] [--rate 5] [--json]
    python bench/fleet.py coverage [bench/fleet_coverage.py's options]
    python bench/fleet.py quota [bench/fleet_quota.py's options]

`coverage` and `quota` run the two benchmarks as they are (each in its own process; see their
docstrings). `targets` runs both at the issue's sizes, one after the other, and prints each
measured figure beside its target, met or not:

- a FlowExportSet over `--accounts` accounts x the regions x `--vpcs` VPCs in moto: seconds
  from apply to full coverage, AWS calls per account and refresh, the coverage report correct
  after VPCs are added and deleted (and under `flowLogs: Report`);
- `--n` FlowExports in one account, FilterLogEvents held to `--rate` requests/s by the
  throttling proxy: all Ready <= 60 s, a new batch uploaded by every FlowExport <= 180 s,
  <= 5% of FilterLogEvents calls throttled, no Ready falling back, peak RSS <= 400 MB,
  worst liveness <= 1 s.

The machine is shared: run it alone, under `flock /tmp/flowexport-bench.lock`, and record
the output with the command in bench/RESULTS.md. Exit status: 0 when every target is met,
1 when one is not, 2 when a benchmark failed to produce figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
SCRIPTS = {"coverage": BENCH / "fleet_coverage.py", "quota": BENCH / "fleet_quota.py"}


@dataclass
class Target:
    """One of the issue's measured targets, and what the run found."""

    name: str
    target: str
    measured: str
    met: bool


def last_json(text: str) -> Any:
    """The last JSON document of a benchmark's standard output (logs may precede it)."""
    decoder = json.JSONDecoder()
    found: Any = None
    starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    for start in starts:
        if text[start : start + 1] not in ("{", "["):
            continue
        try:
            found, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
    if found is None:
        raise ValueError("no JSON document in the benchmark's output")
    return found


def run_script(name: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run one fleet benchmark in its own process, its output captured."""
    return subprocess.run(
        [sys.executable, str(SCRIPTS[name]), *args], capture_output=True, text=True, check=False
    )


def coverage_targets(result: dict[str, Any]) -> list[Target]:
    """The coverage benchmark's figures against the issue's (no number given: reported)."""
    steps = {s["name"]: s for s in result["steps"]}
    apply, steady = steps["apply"], steps["steady"]
    size = (
        f"{result['accounts']} accounts x {len(result['regions'])} regions x "
        f"{result['vpcs_per_account_region']} VPCs"
    )
    return [
        Target(
            "full coverage from apply",
            f"{size}: reported",
            f"{apply['seconds']:.1f} s, {apply['refreshes']} refresh(es)",
            bool(apply["correct"]),
        ),
        Target(
            "AWS calls per account and refresh",
            "reported",
            str(steady["calls_per_account"]),
            True,
        ),
        *(
            Target(
                f"coverage correct after '{s['name']}'",
                "exactly what moto holds",
                "correct" if s["correct"] else f"WRONG {s['note']}",
                bool(s["correct"]),
            )
            for s in result["steps"]
            if s["name"] != "apply"
        ),
    ]


def quota_targets(result: dict[str, Any]) -> list[Target]:
    """The quota benchmark's figures against the issue's targets."""
    n, rate = result["n"], result["rate"]
    ready, batch = result["ready_s"], result["batch_s"]
    return [
        Target(
            f"all {n} Ready",
            "<= 60 s",
            f"{ready} s" if ready is not None else f"{result['ready_at_timeout']} of {n}",
            ready is not None and ready <= 60,
        ),
        Target(
            "new batch uploaded by every FlowExport",
            "<= 180 s",
            f"{batch} s" if batch is not None else f"{result['uploaded']} of {n}",
            batch is not None and batch <= 180,
        ),
        Target(
            f"FilterLogEvents throttled at {rate:g}/s",
            "<= 5%",
            f"{result['filter_throttled_pct']}% of {result['filter_calls']}",
            result["filter_throttled_pct"] <= 5,
        ),
        Target(
            "Ready falling back",
            "0",
            str(result["ready_fell_back"]),
            result["ready_fell_back"] == 0,
        ),
        Target(
            "peak RSS", "<= 400 MB", f"{result['peak_rss_mb']} MB", result["peak_rss_mb"] <= 400
        ),
        Target(
            "worst liveness",
            "<= 1 s",
            f"{result['liveness_worst_s']} s ({result['liveness_failed']} failed)",
            result["liveness_worst_s"] <= 1 and result["liveness_failed"] == 0,
        ),
    ]


def targets(args: argparse.Namespace) -> int:
    """Run both benchmarks at the given sizes and print the targets, met or not."""
    found: list[Target] = []
    coverage = run_script(
        "coverage",
        [
            "--accounts",
            str(args.accounts),
            "--regions",
            args.regions,
            "--vpcs",
            str(args.vpcs),
            "--json",
        ],
    )
    quota = run_script(
        "quota",
        ["--n", str(args.n), "--rate", str(args.rate), "--variants", "budget", "--json"],
    )
    for name, done, judge in (
        ("coverage", coverage, coverage_targets),
        ("quota", quota, quota_targets),
    ):
        try:
            figures = last_json(done.stdout)
            if isinstance(figures, list):
                figures = figures[0]
            found.extend(judge(figures))
        except (ValueError, KeyError, IndexError) as error:
            print(f"bench/{SCRIPTS[name].name} gave no figures ({error}); exit {done.returncode}")
            print(done.stderr[-2000:], file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps([asdict(t) for t in found], indent=2))
    else:
        width = max(len(t.name) for t in found)
        for t in found:
            mark = "met" if t.met else "NOT MET"
            print(f"{t.name:<{width}}  {t.measured:>22}  target {t.target:<28} {mark}")
    return 0 if all(t.met for t in found) else 1


def main(argv: list[str] | None = None) -> int:
    """Dispatch to one benchmark, or run both against the issue's targets."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SCRIPTS:
        done = subprocess.run([sys.executable, str(SCRIPTS[argv[0]]), *argv[1:]], check=False)
        return done.returncode
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, script in SCRIPTS.items():
        commands.add_parser(name, help=f"run bench/{script.name} with the options that follow")
    run_targets = commands.add_parser("targets", help="both, against the issue's targets")
    run_targets.add_argument("--accounts", type=int, default=50)
    run_targets.add_argument("--regions", default="us-east-1,eu-west-1")
    run_targets.add_argument("--vpcs", type=int, default=3)
    run_targets.add_argument("--n", type=int, default=300, help="FlowExports in one account")
    run_targets.add_argument("--rate", type=float, default=5.0, help="FilterLogEvents per s")
    run_targets.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    return targets(args)


if __name__ == "__main__":
    sys.exit(main())
