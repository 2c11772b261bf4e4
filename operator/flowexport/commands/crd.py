"""`flowexport crd`: print (or write) the CRDs generated from the API models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from flowexport.api.crd import CRDS, crd_named, render_crd_yaml
from flowexport.commands.common import EXIT_OK, EXIT_USAGE


def add_parser(commands: Any) -> None:
    """Register the subcommand."""
    parser = commands.add_parser(
        "crd",
        help="print the CustomResourceDefinitions (FlowExport by default)",
        description=(
            "Print a CRD generated from the API models (YAML): FlowExport unless KIND names "
            f"another ({', '.join(d.kind for d in CRDS)}); --all prints every one, and "
            "--write writes each to its file (what `make crd` runs)."
        ),
    )
    parser.add_argument("kind", nargs="?", default=None, help="the kind (default FlowExport)")
    parser.add_argument(
        "--all", action="store_true", help="print every CRD, as one multi-document stream"
    )
    parser.add_argument(
        "--write",
        metavar="DIR",
        type=Path,
        help="write each CRD to DIR/<file> (crds/flowexport.yaml, crds/accountgrant.yaml, ...)",
    )
    parser.add_argument(
        "--chart-files",
        metavar="DIR",
        type=Path,
        help="with --write: also write the chart's copies, DIR/<kind>-crd.yaml",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print or write the CRDs."""
    if args.write is not None:
        for definition in CRDS:
            text = render_crd_yaml(definition)
            (args.write / definition.file).write_text(text)
            if args.chart_files is not None:
                (args.chart_files / definition.chart_file).write_text(text)
        return EXIT_OK
    if args.all:
        sys.stdout.write("---\n".join(render_crd_yaml(d) for d in CRDS))
        return EXIT_OK
    try:
        definition = crd_named(args.kind) if args.kind else CRDS[0]
    except KeyError as exc:
        sys.stderr.write(f"flowexport crd: {exc.args[0]}\n")
        return EXIT_USAGE
    sys.stdout.write(render_crd_yaml(definition))
    return EXIT_OK
