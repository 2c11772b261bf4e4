"""What several subcommands share: usage errors, exit codes, reading flow-log files."""

from __future__ import annotations

import argparse
import zlib
from collections.abc import Sequence
from itertools import chain
from typing import IO

from flowexport.core.aggregate import Aggregator
from flowexport.core.logformat import DEFAULT_V2_FORMAT, LogFormat, LogFormatError
from flowexport.core.normalise import FlowFilter
from flowexport.core.processor import FlowProcessor, ProcessStats
from flowexport.core.records import is_header
from flowexport.textinput import open_lines

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A problem the user fixes by changing the command line, inputs or environment (exit 2)."""


def csv_list(text: str) -> list[str]:
    """`ACCEPT,REJECT` -> ['ACCEPT', 'REJECT']."""
    return [part.strip() for part in text.split(",") if part.strip()]


def add_reading_options(parser: argparse.ArgumentParser) -> None:
    """The options that say how flow-log files are read and filtered."""
    parser.add_argument(
        "--format",
        dest="log_format",
        help=(
            "the flow log's LogFormat ('${version} ${srcaddr} ...'); default: the file's header "
            "line if it has one, else the AWS default (version 2) format"
        ),
    )
    parser.add_argument(
        "--actions",
        type=csv_list,
        default=["ACCEPT"],
        help="comma-separated actions to keep: ACCEPT, REJECT (default: ACCEPT)",
    )
    parser.add_argument(
        "--include-cidr",
        action="append",
        default=[],
        metavar="CIDR",
        help="keep only flows with an endpoint in CIDR (repeatable)",
    )
    parser.add_argument(
        "--exclude-cidr",
        action="append",
        default=[],
        metavar="CIDR",
        help="drop flows with an endpoint in CIDR (repeatable)",
    )


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


def read_flow_files(
    args: argparse.Namespace, paths: Sequence[str]
) -> tuple[Aggregator, ProcessStats]:
    """Parse, normalise and aggregate the files named, as the reading options say."""
    try:
        explicit = LogFormat.parse(args.log_format) if args.log_format else None
        flow_filter = FlowFilter.build(args.actions, args.include_cidr, args.exclude_cidr)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    total = Aggregator()
    stats = ProcessStats()
    for path in paths:
        try:
            with open_lines(path) as stream:
                fmt, first = _format_for(stream, explicit)
                processor = FlowProcessor(fmt, flow_filter)
                processor.feed(chain(first, stream))
        except (OSError, EOFError, zlib.error) as exc:
            strerror = exc.strerror if isinstance(exc, OSError) else None
            reason = strerror or str(exc) or type(exc).__name__
            raise UsageError(f"cannot read {path}: {reason}") from None
        total.merge(processor.aggregator)
        stats.add(processor.stats)
    return total, stats
