"""What several subcommands share: usage errors, exit codes, reading flow-log files."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain, repeat

from flowexport.commands.textinput import describe, open_lines
from flowexport.core.aggregate import Aggregator
from flowexport.core.logformat import DEFAULT_V2_FORMAT, LogFormat, LogFormatError
from flowexport.core.normalise import FlowFilter
from flowexport.core.processor import FlowProcessor, ProcessStats
from flowexport.core.records import is_header, too_long

EXIT_OK = 0
#: The PCE rejected some flows.
EXIT_REJECTED = 1
#: Some input file was unreadable, damaged or unusable; the others were processed.
EXIT_INCOMPLETE = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A problem the user fixes by changing the command line, inputs or environment (exit 2)."""


#: What the simulators (`flowexport.sim`) need beyond the operator: the `demo` extra.
SIMULATOR_MODULES = ("flowexport.sim", "moto", "cryptography", "jsonschema", "jsonpatch")


def require_simulators() -> None:
    """Raise a one-line UsageError unless the simulators and their packages are installed
    (the operator's image carries neither)."""
    missing = [name for name in SIMULATOR_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(
            f"needs the simulators, not installed here ({', '.join(missing)}): "
            "pip install 'flowexport-operator[demo]'"
        )


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


def _format_for(
    lines: Iterator[str], explicit: LogFormat | None
) -> tuple[LogFormat, Iterable[str]]:
    """The format of an input, and the lines read while finding it (blank ones as ''), to be
    processed too.

    Raises LogFormatError when the input's header line is not a usable format.
    """
    if explicit is not None:
        return explicit, ()
    blank = 0
    for line in lines:
        if too_long(line):
            return DEFAULT_V2_FORMAT, chain(repeat("", blank), (line,))
        tokens = line.split()
        if tokens:
            fmt = LogFormat.parse(line) if is_header(tokens) else DEFAULT_V2_FORMAT
            return fmt, chain(repeat("", blank), (line,))
        blank += 1
    return DEFAULT_V2_FORMAT, repeat("", blank)


@dataclass
class FlowFiles:
    """What reading flow-log files gave: their flows, the counts of their lines, and one
    message for each file that could not be read to its end."""

    flows: Aggregator = field(default_factory=Aggregator)
    stats: ProcessStats = field(default_factory=ProcessStats)
    problems: list[str] = field(default_factory=list)


def read_flow_files(args: argparse.Namespace, paths: Sequence[str]) -> FlowFiles:
    """Parse, normalise and aggregate the files named, as the reading options say.

    A file that cannot be opened, is damaged part way (its lines before the damage still
    count) or has an unusable header is reported on stderr and in `problems`; the other
    files still go through.
    """
    try:
        explicit = LogFormat.parse(args.log_format) if args.log_format else None
        flow_filter = FlowFilter.build(args.actions, args.include_cidr, args.exclude_cidr)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    files = FlowFiles()
    for path in paths:
        problem = _read_file(path, explicit, flow_filter, files)
        if problem is not None:
            files.problems.append(problem)
            print(f"flowexport {args.command}: {problem}", file=sys.stderr)
    return files


def _read_file(
    path: str, explicit: LogFormat | None, flow_filter: FlowFilter, files: FlowFiles
) -> str | None:
    """Fold one file into `files`; what went wrong with it, if anything."""
    try:
        with open_lines(path) as source:
            lines = iter(source)
            try:
                fmt, first = _format_for(lines, explicit)
            except LogFormatError as exc:
                return f"cannot use {path}: its header is not a usable log format ({exc})"
            processor = FlowProcessor(fmt, flow_filter)
            processor.feed(chain(first, lines))
    except OSError as exc:
        return f"cannot read {path}: {describe(exc)}"
    files.flows.merge(processor.aggregator)
    files.stats.add(processor.stats)
    if source.error is None:
        return None
    records = processor.stats.records
    return f"cannot read all of {path}: {source.error}; the {records} lines before that count"
