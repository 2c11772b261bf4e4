"""The `flowexport` command, run as a user would run it."""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from flowexport import __version__
from flowexport.api.crd import render_crd_yaml
from flowexport.cli import COMMANDS, build_parser, chosen_command
from flowexport.core.logformat import PIPELINE_FORMAT
from tests.flowlines import line

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "flowlogs" / "sample.log"


def flowexport(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "flowexport", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )


def counts(result: subprocess.CompletedProcess[bytes]) -> dict[str, object]:
    value: dict[str, object] = json.loads(result.stderr.decode().strip().splitlines()[-1])
    return value


def test_parse_sample_file() -> None:
    result = flowexport("parse", "--actions", "ACCEPT,REJECT", str(SAMPLE))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert "10.0.1.15,10.0.2.40,5432,6" in lines
    assert "172.31.9.69,172.31.9.12,3389,6" in lines  # a REJECT
    assert "2001:db8:1234:1a00::15,2001:db8:1234:1a02::40,443,6" in lines
    assert not any(",48512," in x or ",20641," in x for x in lines), "no ephemeral-port flows"
    assert len(lines) == len(set(lines)) == 9
    summary = counts(result)
    assert summary["records"] == 25
    assert summary["flows"] == 9
    skipped = summary["skipped"]
    assert isinstance(skipped, dict)
    assert summary["flowed"] + sum(skipped.values()) == 25  # type: ignore[operator]
    assert skipped["header"] == 1


def test_parse_gzip_and_stdin_match_plain(tmp_path: Path) -> None:
    plain = flowexport("parse", str(SAMPLE))
    packed = tmp_path / "flows.log.gz"
    packed.write_bytes(gzip.compress(SAMPLE.read_bytes()))
    assert flowexport("parse", str(packed)).stdout == plain.stdout
    assert flowexport("parse", "-", stdin=gzip.compress(SAMPLE.read_bytes())).stdout == plain.stdout
    assert flowexport("parse", stdin=SAMPLE.read_bytes()).stdout == plain.stdout


def test_parse_custom_format(tmp_path: Path) -> None:
    log = tmp_path / "custom.log"
    log.write_text(
        line(
            PIPELINE_FORMAT,
            srcaddr="10.0.2.40",
            dstaddr="10.0.1.15",
            srcport=5432,
            dstport=48512,
            tcp_flags=18,
        )
        + "\n"
    )
    result = flowexport("parse", "--format", PIPELINE_FORMAT.render(), str(log))
    assert result.stdout.decode() == "10.0.1.15,10.0.2.40,5432,6\n"


def test_parse_survives_binary_garbage(tmp_path: Path) -> None:
    junk = tmp_path / "junk.log"
    junk.write_bytes(b"\xff\xfe\x00garbage\n" + SAMPLE.read_bytes()[:0] + b"\x80\x81\n")
    result = flowexport("parse", str(junk))
    assert result.returncode == 0
    assert counts(result)["records"] == 2


def test_truncated_or_corrupt_gzip_is_a_clear_error(tmp_path: Path) -> None:
    packed = gzip.compress(SAMPLE.read_bytes() * 50)
    truncated = tmp_path / "truncated.log.gz"
    truncated.write_bytes(packed[: len(packed) // 2])
    corrupt = tmp_path / "corrupt.log.gz"
    corrupt.write_bytes(packed[:20] + b"\x00" * 200 + packed[220:])
    for path in (truncated, corrupt):
        result = flowexport("parse", str(path))
        assert result.returncode == 2
        assert f"cannot read {path}" in result.stderr.decode()
        assert b"Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["parse", "--format", "${srcaddr}"], "lacks"),
        (["parse", "--actions", "ALLOW"], "ALLOW"),
        (["parse", "--include-cidr", "10.0.0.0/99"], "10.0.0.0/99"),
        (["parse", "/no/such/file"], "cannot read /no/such/file"),
    ],
)
def test_parse_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = flowexport(*args)
    assert result.returncode == 2
    assert message in result.stderr.decode()
    assert b"Traceback" not in result.stderr


def test_crd_command_prints_the_generated_crd() -> None:
    result = flowexport("crd")
    assert result.returncode == 0
    assert result.stdout.decode() == render_crd_yaml()


def test_version_and_help() -> None:
    assert flowexport("--version").stdout.decode().strip() == f"flowexport {__version__}"
    for args in (["--help"], *([c, "--help"] for c in ("parse", "crd", "upload", "pce-sim"))):
        result = flowexport(*args)
        assert result.returncode == 0
        assert b"usage: flowexport" in result.stdout


def test_each_subcommand_summary_matches_its_module() -> None:
    full = build_parser()
    subparsers = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction))
    shown = {choice.dest: choice.help for choice in subparsers._choices_actions}
    assert shown == {name: summary for name, (_, summary) in COMMANDS.items()}


def test_each_subcommand_parses_the_same_alone_as_in_the_full_parser() -> None:
    for name in COMMANDS:
        alone = build_parser(name)._subparsers._group_actions[0].choices[name]  # type: ignore[union-attr]
        full = build_parser()._subparsers._group_actions[0].choices[name]  # type: ignore[union-attr]
        assert alone.format_help() == full.format_help()


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["parse", "x"], "parse"),
        (["--log-level", "DEBUG", "sync", "-f", "x"], "sync"),
        (["--log-level=DEBUG", "run", "-A"], "run"),
        (["--help"], None),
        (["nonsense"], None),
    ],
)
def test_the_chosen_subcommand_is_found_after_global_options(
    argv: list[str], command: str | None
) -> None:
    assert chosen_command(argv) == command


def test_parse_imports_none_of_the_heavy_edges() -> None:
    probe = (
        "import sys; from flowexport.cli import main\n"
        "try:\n    main(['parse', '--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = {'kopf', 'boto3', 'botocore', 'aiohttp', 'kubernetes', 'httpx', 'moto'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"
