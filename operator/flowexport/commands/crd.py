"""`flowexport crd`: print the CRD generated from the API models."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from flowexport.api.crd import render_crd_yaml
from flowexport.commands.common import EXIT_OK


def add_parser(commands: Any) -> None:
    """Register the subcommand."""
    parser = commands.add_parser(
        "crd",
        help="print the FlowExport CustomResourceDefinition",
        description="Print the FlowExport CRD generated from the API models (YAML).",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print the CRD."""
    sys.stdout.write(render_crd_yaml())
    return EXIT_OK
