"""`flowexport parse`: flow-log files in, PCE CSV out, counts on stderr."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from flowexport.commands.common import add_reading_options, read_flow_files
from flowexport.core.encode import encode_csv


def add_parser(commands: Any) -> None:
    """Register the subcommand."""
    parser = commands.add_parser(
        "parse",
        help="turn flow-log lines into PCE CSV flows (stdout) and counts (stderr)",
        description=(
            "Read flow logs (text, plain or gzip, or Parquet as AWS delivers them to S3, told "
            "apart by content; '-' for stdin), normalise them to client -> server flows, "
            "aggregate duplicates and print PCE bulk CSV (src_ip,dst_ip,dst_port,proto) on "
            "stdout. One JSON line of counts goes to stderr. Exit 0 when every file was read, "
            "1 when some file could not be read to its end, 2 on a usage error, 3 when some "
            "input was unusable (not flow logs, records that all fail the format, or a format "
            "without the fields a flow needs). Each such file is named on stderr with what to "
            "do; the flows of everything read are still printed."
        ),
    )
    add_reading_options(parser)
    parser.add_argument(
        "files", nargs="*", default=["-"], metavar="FILE", help="input ('-': stdin)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print the flows of the files as CSV, and their counts as JSON on stderr."""
    files = read_flow_files(args, args.files)
    sys.stdout.write(encode_csv(files.flows.flows()))
    summary = {
        "records": files.stats.records,
        "flows": len(files.flows),
        **files.stats.as_dict(),
        "file_errors": len(files.problems),
    }
    sys.stderr.write(json.dumps(summary) + "\n")
    return files.exit_code
