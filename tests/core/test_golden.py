"""Golden files per flow-log format, as Filebeat's `testdata/*.golden.json`.

Each directory under `tests/core/golden/` is one case (`golden/README.md` says what each holds):

- `input.log`: flow-log lines as AWS writes them (a file delivered to S3 starts with a header
  line of field names, which `flowexport parse` takes as the format);
- `format.txt` (optional): the LogFormat (`${field} ...`), passed as `--format`, when the format
  comes from outside the file (CloudWatch Logs has no header);
- `args.txt` (optional): more `flowexport parse` options, e.g. `--actions ACCEPT,REJECT`;
- `xfail.txt` (optional): a known core bug the case shows, in words; its `expected.json` holds
  the right answer, written by hand (the update below leaves it alone), and the case is
  expected to fail (strictly) until the bug is fixed, when `xfail.txt` goes;
- `expected.json`: what `flowexport parse` gives for the input: `exit`, `flows` (its stdout, the
  PCE CSV lines `client,server,port,protocol` in first-seen order) and `counts` (its stderr
  JSON: records, flows, flowed, skipped by reason), and `lines`, the outcome of each input line
  alone (`"<n>: flow <csv>"` or `"<n>: skip <reason>"`), to read a case line by line.

The test runs the `flowexport parse` entry point (`flowexport.cli.main`, in process) on the case
and compares with `expected.json`. It also parses each line alone through the core processor
and checks that those outcomes add up to the command's flows and counts, so `lines` cannot drift
from what the command does.

To regenerate the expected files from the current code (after a deliberate change of
behaviour), run

    FLOWEXPORT_UPDATE_GOLDEN=1 pytest tests/core/test_golden.py

then read the diff of every `expected.json` line by line against the AWS field documentation
and docs/how-it-works.md ("How a record becomes a flow") before committing it: the update
writes whatever the code does, right or wrong. A new case is a new directory with its
`input.log` (and `format.txt`/`args.txt`); the update writes its `expected.json`.
"""

from __future__ import annotations

import json
import os
import shlex
from collections import Counter
from pathlib import Path

import pytest

from flowexport.cli import build_parser, main
from flowexport.core.encode import flow_to_csv
from flowexport.core.logformat import DEFAULT_V2_FORMAT, LogFormat
from flowexport.core.normalise import FlowFilter
from flowexport.core.processor import process_lines
from flowexport.core.records import is_header, too_long

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("FLOWEXPORT_UPDATE_GOLDEN") == "1"


def cases() -> list[object]:
    params = []
    for case in sorted(p for p in GOLDEN.iterdir() if p.is_dir()):
        xfail = case / "xfail.txt"
        marks = (
            [pytest.mark.xfail(reason=xfail.read_text().strip(), strict=True)]
            if xfail.exists()
            else []
        )
        params.append(pytest.param(case, id=case.name, marks=marks))
    return params


def parse_args(case: Path) -> list[str]:
    """The `flowexport parse` options of a case."""
    args = []
    if (case / "format.txt").exists():
        args += ["--format", (case / "format.txt").read_text().strip()]
    if (case / "args.txt").exists():
        args += shlex.split((case / "args.txt").read_text())
    return args


def read_lines(path: Path) -> list[str]:
    """The input's lines as `flowexport parse` reads them: UTF-8, damage replaced, any line
    break."""
    with path.open(encoding="utf-8", errors="replace", newline=None) as f:
        return list(f)


def input_format(explicit: str | None, lines: list[str]) -> LogFormat:
    """The format `flowexport parse` uses: `--format`, else a header line first (after blank
    lines), else the AWS default."""
    if explicit:
        return LogFormat.parse(explicit)
    for line in lines:
        if too_long(line):
            break
        tokens = line.split()
        if tokens:
            return LogFormat.parse(line) if is_header(tokens) else DEFAULT_V2_FORMAT
    return DEFAULT_V2_FORMAT


def line_outcomes(case: Path, args: list[str]) -> list[str]:
    """What each input line gives alone: `<n>: flow <csv>` or `<n>: skip <reason>`."""
    options = build_parser("parse").parse_args(["parse", *args])
    flow_filter = FlowFilter.build(options.actions, options.include_cidr, options.exclude_cidr)
    lines = read_lines(case / "input.log")
    fmt = input_format(options.log_format, lines)
    outcomes = []
    for n, line in enumerate(lines, 1):
        flows, stats = process_lines([line], fmt, flow_filter)
        if flows:
            assert len(flows) == 1 and stats.skipped == {}, (n, line)
            outcomes.append(f"{n}: flow {flow_to_csv(flows[0][0])}")
        else:
            assert list(stats.skipped.values()) == [1], (n, line)
            outcomes.append(f"{n}: skip {next(iter(stats.skipped))}")
    return outcomes


def run_parse(case: Path, args: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    """`flowexport parse` on the case: its exit code, stdout lines and stderr counts."""
    capsys.readouterr()
    code = main(["parse", *args, str(case / "input.log")])
    out, err = capsys.readouterr()
    return {"exit": code, "flows": out.splitlines(), "counts": json.loads(err)}


def test_golden_directory_holds_the_cases() -> None:
    names = {p.name for p in GOLDEN.iterdir() if p.is_dir()}
    for version in range(2, 9):
        assert any(name.startswith(f"v{version}-") for name in names), version
    for case in names:
        assert (GOLDEN / case / "input.log").exists(), case
        assert UPDATE or (GOLDEN / case / "expected.json").exists(), case


@pytest.mark.parametrize("case", cases())
def test_golden(case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = parse_args(case)
    actual = run_parse(case, args, capsys)
    actual["lines"] = line_outcomes(case, args)
    expected_file = case / "expected.json"
    if UPDATE and not (case / "xfail.txt").exists():
        expected_file.write_text(json.dumps(actual, indent=2) + "\n")
    expected = json.loads(expected_file.read_text())
    assert actual == expected

    # The lines' own outcomes add up to the command's flows and counts.
    outcomes = [o.split(" ", 1)[1] for o in expected["lines"]]
    flows = [o.removeprefix("flow ") for o in outcomes if o.startswith("flow ")]
    skips = Counter(o.removeprefix("skip ") for o in outcomes if o.startswith("skip "))
    counts = expected["counts"]
    assert expected["flows"] == list(dict.fromkeys(flows))
    assert counts["skipped"] == dict(sorted(skips.items()))
    assert (counts["records"], counts["flowed"], counts["flows"]) == (
        len(outcomes),
        len(flows),
        len(set(flows)),
    )
