"""`flowexport pce-sim`: run the PCE simulator on loopback until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

from flowexport.commands.common import EXIT_OK, UsageError, require_simulators
from flowexport.urls import is_loopback_host


def add_parser(commands: Any) -> None:
    """Register the subcommand."""
    parser = commands.add_parser(
        "pce-sim",
        help="run a simulated Illumio PCE on loopback (for tests and demos)",
        description=(
            "Serve the simulated PCE until SIGINT/SIGTERM. Once listening it prints one JSON "
            "line on stdout: url, org, api_key, the api_secret when it generated one, and "
            "ca_file with --tls. Recorded flows are at URL/_sim/flows."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    parser.add_argument("--org", type=int, action="append", help="org id served (repeatable)")
    parser.add_argument("--api-key", default=os.environ.get("PCE_SIM_API_KEY", "api_simulator"))
    parser.add_argument(
        "--api-secret",
        default=os.environ.get("PCE_SIM_API_SECRET"),
        help="API secret (default: $PCE_SIM_API_SECRET, else generated and printed)",
    )
    parser.add_argument("--rate-limit", type=int, default=500, help="requests/minute per key")
    parser.add_argument(
        "--no-retry-after", action="store_true", help="answer 429 without a Retry-After header"
    )
    parser.add_argument("--tls", action="store_true", help="serve HTTPS from a fresh CA")
    parser.add_argument("--ca-out", type=Path, help="with --tls: where to write the CA (PEM)")
    parser.add_argument("--bulk-seconds", type=float, default=0.0, help="duration of a bulk op")
    faults = parser.add_argument_group("fault injection (first N API requests)")
    faults.add_argument("--fail-first", type=int, default=0, help="answer with --fail-status")
    faults.add_argument("--fail-status", type=int, default=503)
    faults.add_argument("--throttle-first", type=int, default=0, help="answer 429")
    faults.add_argument("--drop-first", type=int, default=0, help="close without answering")
    faults.add_argument("--delay", type=float, default=0.0, help="seconds before every answer")
    faults.add_argument("--fault-path", default="", help="only paths containing this text")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    require_simulators()
    from flowexport.sim.pce import PCESimConfig, PCESimulator  # noqa: PLC0415 - only with the demo extra
    from flowexport.sim.serve import serve_until_signalled  # noqa: PLC0415 - only with the demo extra
    from flowexport.sim.tls import make_loopback_tls  # noqa: PLC0415 - only with the demo extra

    if not is_loopback_host(args.host):
        raise UsageError("the simulator only binds loopback addresses (127.0.0.0/8, ::1)")
    generated = args.api_secret is None
    secret = secrets.token_urlsafe(18) if generated else args.api_secret
    config = PCESimConfig(
        api_keys={args.api_key: secret},
        orgs=frozenset(args.org or [1]),
        rate_limit_per_minute=args.rate_limit,
        send_retry_after=not args.no_retry_after,
        bulk_seconds=args.bulk_seconds,
    )
    sim = PCESimulator(config)
    sim.set_faults(
        fail_first=args.fail_first,
        fail_status=args.fail_status,
        throttle_first=args.throttle_first,
        retry_after=None if args.no_retry_after else 1.0,
        drop_first=args.drop_first,
        delay_seconds=args.delay,
        path_contains=args.fault_path,
    )
    ready: dict[str, Any] = {"org": sorted(config.orgs)[0], "api_key": args.api_key}
    if generated:
        ready["api_secret"] = secret  # the simulator's own throwaway credential
    ssl_context = None
    if args.tls:
        tls = make_loopback_tls()
        ca_file = args.ca_out or Path(tempfile.mkdtemp(prefix="pce-sim-")) / "ca.crt"
        ca_file.write_text(tls.ca_pem)
        ready["ca_file"] = str(ca_file)
        ssl_context = tls.server_context()

    def on_ready(url: str) -> None:
        print(json.dumps({"url": url, **ready}), flush=True)

    try:
        asyncio.run(serve_until_signalled(sim.app, args.host, args.port, ssl_context, on_ready))
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    sys.stdout.flush()
    return EXIT_OK
