"""The `flowexport` command."""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from collections.abc import Sequence
from itertools import chain
from typing import IO

from flowexport import __version__
from flowexport.api.crd import render_crd_yaml
from flowexport.core.aggregate import Aggregator
from flowexport.core.encode import encode_csv
from flowexport.core.logformat import DEFAULT_V2_FORMAT, LogFormat, LogFormatError
from flowexport.core.normalise import FlowFilter
from flowexport.core.processor import FlowProcessor, ProcessStats
from flowexport.core.records import is_header
from flowexport.textinput import open_lines

EXIT_OK = 0
EXIT_USAGE = 2


class UsageError(Exception):
    """A problem the user fixes by changing the command line or its inputs (exit 2)."""


def _csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="flowexport",
        description="AWS VPC flow logs to Illumio PCE traffic flows.",
    )
    parser.add_argument("--version", action="version", version=f"flowexport {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    parse = commands.add_parser(
        "parse",
        help="turn flow-log lines into PCE CSV flows (stdout) and counts (stderr)",
        description=(
            "Read flow-log lines (plain or gzip, '-' for stdin), normalise them to client -> "
            "server flows, aggregate duplicates and print PCE bulk CSV "
            "(src_ip,dst_ip,dst_port,proto) on stdout. One JSON line of counts goes to stderr."
        ),
    )
    parse.add_argument(
        "--format",
        dest="log_format",
        help=(
            "the flow log's LogFormat ('${version} ${srcaddr} ...'); default: the file's header "
            "line if it has one, else the AWS default (version 2) format"
        ),
    )
    parse.add_argument(
        "--actions",
        type=_csv_list,
        default=["ACCEPT"],
        help="comma-separated actions to keep: ACCEPT, REJECT (default: ACCEPT)",
    )
    parse.add_argument(
        "--include-cidr",
        action="append",
        default=[],
        metavar="CIDR",
        help="keep only flows with an endpoint in CIDR (repeatable)",
    )
    parse.add_argument(
        "--exclude-cidr",
        action="append",
        default=[],
        metavar="CIDR",
        help="drop flows with an endpoint in CIDR (repeatable)",
    )
    parse.add_argument("files", nargs="*", default=["-"], metavar="FILE", help="input ('-': stdin)")

    commands.add_parser(
        "crd",
        help="print the FlowExport CustomResourceDefinition",
        description="Print the FlowExport CRD generated from the API models (YAML).",
    )
    return parser


def _format_for(stream: IO[str], explicit: LogFormat | None) -> tuple[LogFormat, list[str]]:
    """The format of a stream and the lines read while finding it (to be processed too)."""
    if explicit is not None:
        return explicit, []
    for line in stream:
        tokens = line.split()
        if not tokens:
            continue
        if is_header(tokens):
            try:
                return LogFormat.parse(line), [line]
            except LogFormatError as exc:
                raise UsageError(f"header line is not a usable log format: {exc}") from None
        return DEFAULT_V2_FORMAT, [line]
    return DEFAULT_V2_FORMAT, []


def run_parse(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """`flowexport parse`: files in, CSV flows out, counts as JSON on stderr."""
    try:
        explicit = LogFormat.parse(args.log_format) if args.log_format else None
        flow_filter = FlowFilter.build(args.actions, args.include_cidr, args.exclude_cidr)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    total = Aggregator()
    stats = ProcessStats()
    for path in args.files:
        try:
            with open_lines(path) as stream:
                fmt, first = _format_for(stream, explicit)
                processor = FlowProcessor(fmt, flow_filter)
                processor.feed(chain(first, stream))
        except (OSError, EOFError, zlib.error) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise UsageError(f"cannot read {path}: {reason}") from None
        total.merge(processor.aggregator)
        stats.add(processor.stats)
    out.write(encode_csv(total.flows()))
    summary = {"records": stats.records, "flows": len(total), **stats.as_dict()}
    err.write(json.dumps(summary) + "\n")
    return EXIT_OK


def run_crd(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """`flowexport crd`: print the CRD."""
    out.write(render_crd_yaml())
    return EXIT_OK


_COMMANDS = {"parse": run_parse, "crd": run_crd}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `flowexport` console script."""
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args, sys.stdout, sys.stderr)
    except UsageError as exc:
        print(f"flowexport {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
