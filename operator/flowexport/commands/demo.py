"""`flowexport demo`: the whole product on loopback (`make demo`).

The demo runs on the simulators (`flowexport.sim`), which the operator's image does not carry:
they and the packages only they use come with the `demo` extra. The demo itself is
`flowexport.sim.demo`.
"""

from __future__ import annotations

import argparse
from typing import Any

from flowexport.commands.common import require_simulators

#: Shards of the Kinesis stream of `--source stream` (moto spreads records over both).
STREAM_SHARDS = 2


def add_parser(commands: Any) -> None:
    """Register the subcommand."""
    parser = commands.add_parser(
        "demo",
        help="run the whole product on loopback: AWS emulator, PCE and Kubernetes simulators",
        description=(
            "Start moto, the PCE simulator and the Kubernetes API simulator on loopback, apply "
            "a FlowExport, run the operator, write synthetic flow records into the log group "
            "and show status and what the PCE received. Exit 0 when every expected flow "
            "reached the PCE (or --until-flows of them), 1 with the reason otherwise."
        ),
    )
    parser.add_argument(
        "--duration", type=float, default=30.0, help="seconds to write records (default 30)"
    )
    parser.add_argument("--rate", type=int, default=200, help="records per second (default 200)")
    parser.add_argument(
        "--connections",
        type=int,
        default=150,
        help="distinct connections in the synthetic VPC (default 150)",
    )
    parser.add_argument(
        "--until-flows", type=int, metavar="N", help="exit 0 as soon as N flows reached the PCE"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=180.0,
        help="give up (exit 1) after this many seconds (default 180)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="skip deleting the FlowExport at the end"
    )
    parser.add_argument(
        "--source",
        choices=("poll", "stream", "s3"),
        default="poll",
        help=(
            "how the FlowExport reads the flow logs (spec.source.mode): poll reads the log "
            "group with FilterLogEvents; stream has the operator create a subscription filter "
            f"into a Kinesis stream of {STREAM_SHARDS} shards and read the records shard by "
            "shard, and the demo checks that they came through the shards and that deletion "
            "removed the stream and the filter; s3 has the operator create the VPC's flow log "
            "into a bucket, a queue and the bucket's notification, the demo writes the records "
            "as objects as AWS does (gzip text with its header line) and checks that they came "
            "through the queue and that deletion removed the queue and the flow log "
            "(default poll)"
        ),
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo (the simulators must be installed)."""
    require_simulators()
    from flowexport.sim import demo  # noqa: PLC0415 - only with the demo extra

    return demo.run(args)
