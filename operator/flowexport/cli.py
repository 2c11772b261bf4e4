"""The `flowexport` command: argument parsing and dispatch to `flowexport.commands`.

A subcommand's module is imported only when that subcommand runs (or the whole parser is
asked for), so `flowexport parse` does not pay for kopf, boto3 or the simulators, and
`flowexport --help` (which lists the subcommands from `COMMANDS`) imports none of them: this
module imports nothing of the package but its version until a subcommand is chosen.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from flowexport import __version__

#: Each subcommand: its module in `flowexport.commands` and its one-line help (a test holds
#: the help equal to the module's own).
COMMANDS: dict[str, tuple[str, str]] = {
    "parse": ("parse", "turn flow-log lines into PCE CSV flows (stdout) and counts (stderr)"),
    "crd": ("crd", "print the CustomResourceDefinitions (FlowExport by default)"),
    "upload": ("upload", "parse flow-log files and upload their flows to a PCE"),
    "sync": (
        "sync",
        "run one FlowExport outside Kubernetes (ensure, ingest, upload, print status)",
    ),
    "run": (
        "run",
        "run the operator (kopf) against the cluster in KUBECONFIG or in-cluster config",
    ),
    "demo": (
        "demo",
        "run the whole product on loopback: AWS emulator, PCE and Kubernetes simulators",
    ),
    "pce-sim": ("pce_sim", "run a simulated Illumio PCE on loopback (for tests and demos)"),
    "kube-sim": (
        "kube_sim",
        "run a simulated Kubernetes API server on loopback (for tests and demos)",
    ),
}
#: Global options that take a value (so the subcommand is found after them).
_VALUED_OPTIONS = frozenset({"--log-level"})


def chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand named in `argv`, or None (help, version, or a usage error)."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _VALUED_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def build_parser(command: str | None = None, *, listing: bool = False) -> argparse.ArgumentParser:
    """The argument parser: complete for `command`, or for every subcommand when None (unless
    `listing`: then every subcommand is only named, with its one-line help, and no command
    module is imported, which is all `flowexport --help` and a usage error need)."""
    parser = argparse.ArgumentParser(
        prog="flowexport",
        description="AWS VPC flow logs to Illumio PCE traffic flows.",
    )
    parser.add_argument("--version", action="version", version=f"flowexport {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, summary) in COMMANDS.items():
        if command == name or (command is None and not listing):
            importlib.import_module(f"flowexport.commands.{module}").add_parser(commands)
        else:
            commands.add_parser(name, help=summary)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `flowexport` console script."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = chosen_command(arguments)
    args = build_parser(command, listing=command is None).parse_args(arguments)
    # Imported once a subcommand was chosen: help and usage errors exit above without it.
    from flowexport.commands.common import EXIT_USAGE, UsageError  # noqa: PLC0415

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
