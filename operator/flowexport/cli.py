"""The `flowexport` command: argument parsing and dispatch to `flowexport.commands`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from flowexport import __version__
from flowexport.commands import crd, demo, kube_sim, parse, pce_sim, run, sync, upload
from flowexport.commands.common import EXIT_USAGE, UsageError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="flowexport",
        description="AWS VPC flow logs to Illumio PCE traffic flows.",
    )
    parser.add_argument("--version", action="version", version=f"flowexport {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in (parse, crd, upload, sync, run, demo, pce_sim, kube_sim):
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `flowexport` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request is noise
    try:
        code: int = args.run(args)
        return code
    except UsageError as exc:
        print(f"flowexport {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
