"""What several subcommands share: usage errors, exit codes, reading flow-log files."""

from __future__ import annotations

import argparse
import importlib.util
import io
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, cast

from flowexport.core.aggregate import Aggregator
from flowexport.core.logformat import LogFormat, MissingFieldsError
from flowexport.core.normalise import FlowFilter
from flowexport.core.processor import ProcessStats
from flowexport.core.sources import FileKind, UnusableInputError, read_source
from flowexport.core.textfile import describe
from flowexport.errors import FlowExportError

EXIT_OK = 0
#: The PCE rejected some flows.
EXIT_REJECTED = 1
#: Some input file could not be read to its end (missing, unreadable, damaged part way); the
#: others were processed.
EXIT_INCOMPLETE = 1
EXIT_USAGE = 2
#: Some input was unusable: not flow-log text or Parquet, records that all fail the format
#: in force, or a format (from --format, a header line or Parquet columns) without the fields
#: a flow needs; the other files were processed.
EXIT_UNUSABLE = 3


class UsageError(Exception):
    """A problem the user fixes by changing the command line, inputs or environment (exit 2)."""


#: What the simulators (`flowexport.sim`) need beyond the operator: the `demo` extra.
SIMULATOR_MODULES = ("flowexport.sim", "moto", "cryptography", "celpy", "jsonpatch")


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
            "the flow log's LogFormat ('${version} ${srcaddr} ...') for text files; default: "
            "the file's header line if it has one, else the AWS default (version 2) format "
            "(a Parquet file names its own columns)"
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


@dataclass
class FlowFiles:
    """What reading flow-log files gave: their flows, the counts of their records, one
    message for each file that could not be read to its end (`problems`), and whether some
    input was unusable (`unusable`: not flow logs, or a format without the fields a flow
    needs)."""

    flows: Aggregator = field(default_factory=Aggregator)
    stats: ProcessStats = field(default_factory=ProcessStats)
    problems: list[str] = field(default_factory=list)
    unusable: bool = False

    @property
    def exit_code(self) -> int:
        """EXIT_UNUSABLE, else EXIT_INCOMPLETE, else EXIT_OK."""
        if self.unusable:
            return EXIT_UNUSABLE
        return EXIT_INCOMPLETE if self.problems else EXIT_OK


#: Opens one input by name as a buffered binary stream (default: a file, `-` stdin).
Opener = Callable[[str], AbstractContextManager[IO[bytes]]]


def read_flow_files(
    args: argparse.Namespace, paths: Sequence[str], opener: Opener | None = None
) -> FlowFiles:
    """Parse, normalise and aggregate the files named, as the reading options say.

    Text (plain or gzip) and Parquet are told apart by their content. A file that cannot be
    opened, is damaged part way (its records before the damage still count) or is unusable
    (see `core.sources`) is reported on stderr, one line each, and in `problems`; the other
    files still go through. A `--format` without the fields a flow needs is unusable for
    every file: it is reported once and no file is read.
    """
    files = FlowFiles()
    try:
        explicit = LogFormat.parse(args.log_format) if args.log_format else None
    except MissingFieldsError as exc:
        files.unusable = True
        message = (
            f"cannot use --format: {exc}; pass the flow log's whole LogFormat "
            "(`aws ec2 describe-flow-logs` shows it)"
        )
        files.problems.append(message)
        print(f"flowexport {args.command}: {message}", file=sys.stderr)
        return files
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        flow_filter = FlowFilter.build(args.actions, args.include_cidr, args.exclude_cidr)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for path in paths:
        problem = _read_file(path, explicit, flow_filter, files, opener or open_input)
        if problem is not None:
            files.problems.append(problem)
            print(f"flowexport {args.command}: {problem}", file=sys.stderr)
    return files


def _read_file(
    path: str, explicit: LogFormat | None, flow_filter: FlowFilter, files: FlowFiles, opener: Opener
) -> str | None:
    """Fold one file into `files`; what went wrong with it, if anything."""
    try:
        with opener(path) as stream:
            read = read_source(stream, explicit, flow_filter)
    except UnusableInputError as exc:
        files.unusable = True
        if exc.stats is not None:
            files.stats.add(exc.stats)
        return f"cannot use {path}: {exc}"
    except OSError as exc:
        return f"cannot read {path}: {describe(exc)}"
    except FlowExportError as exc:  # an S3 object that could not be fetched
        return str(exc)
    files.flows.merge(read.processor.aggregator)
    files.stats.add(read.stats)
    if read.error is None:
        return None
    records = read.stats.records
    what = "rows" if read.kind is FileKind.PARQUET else "lines"
    return f"cannot read all of {path}: {read.error}; the {records} {what} before that count"


@contextmanager
def open_input(path: str) -> Iterator[IO[bytes]]:
    """A buffered binary stream of `path` (`-`: standard input)."""
    if path == "-":
        raw = sys.stdin.buffer
        # peek() needs a BufferedReader; a replaced stdin may be a plain binary stream.
        yield raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(cast(Any, raw))
        return
    with open(path, "rb") as stream:
        yield stream
