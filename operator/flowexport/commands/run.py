"""`flowexport run`: the operator."""

from __future__ import annotations

import argparse
import logging
from typing import Any

import kopf

from flowexport import metrics
from flowexport.commands.common import EXIT_OK, UsageError
from flowexport.kube.runner import StartupError, has_patterns, preflight
from flowexport.kube.runner import run as run_operator
from flowexport.kube.state import RESYNC_SECONDS

#: Libraries kept at WARNING even with --verbose.
QUIET_LOGGERS = (
    "botocore",
    "boto3",
    "urllib3",
    "s3transfer",
    "aiohttp.access",
    "httpx",
    "httpcore",
)


def add_parser(commands: Any) -> None:
    """Register the subcommand."""
    parser = commands.add_parser(
        "run",
        help="run the operator (kopf) against the cluster in KUBECONFIG or in-cluster config",
        description=(
            "Reconcile FlowExports: ensure their subscriptions, run one ingestion worker per "
            "FlowExport, write status and Events. Standalone (no peering): run one replica."
        ),
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch this namespace (repeatable; globs allowed)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    parser.add_argument(
        "--liveness",
        metavar="URL",
        help="serve a liveness endpoint, e.g. http://0.0.0.0:8080/healthz",
    )
    parser.add_argument("--log-format", choices=["plain", "json"], default="plain")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--settle",
        type=float,
        default=15.0,
        help="seconds an event must have been ingested before it is read (default 15)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on this port at /metrics (default: off)",
    )
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=RESYNC_SECONDS,
        help="reconcile healthy FlowExports this often, repairing drift (default 300)",
    )
    parser.add_argument(
        "--allowed-pce-host",
        action="append",
        default=[],
        metavar="HOST",
        dest="allowed_pce_hosts",
        help=(
            "a PCE host the operator may send API keys to (repeatable); default: any host a "
            "FlowExport names"
        ),
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run until SIGINT/SIGTERM."""
    if not args.namespace and not args.all_namespaces:
        raise UsageError(
            "say which namespaces to watch: --namespace NS (repeatable) or --all-namespaces"
        )
    logging.getLogger().handlers.clear()  # kopf installs its own (plain or JSON)
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL,
    )
    for noisy in QUIET_LOGGERS:  # their debug output is wire dumps, not the operator's story
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # urllib3's retry warnings repeat what the one-line start-up error or kopf says anyway
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    if args.settle < 0 or args.resync_seconds <= 0:
        raise UsageError("--settle must be >= 0 and --resync-seconds > 0")
    if args.metrics_port is not None:
        if not 0 < args.metrics_port < 65536:
            raise UsageError("--metrics-port must be a TCP port (1-65535)")
        try:
            metrics.serve(args.metrics_port)
        except OSError as exc:
            raise UsageError(f"cannot serve metrics on port {args.metrics_port}: {exc}") from None
    try:
        api = preflight(check_crd=not has_patterns(args.namespace))
    except StartupError as exc:
        raise UsageError(str(exc)) from None
    run_operator(
        args.namespace,
        args.all_namespaces,
        args.liveness,
        args.settle,
        args.resync_seconds,
        allowed_pce_hosts=frozenset(args.allowed_pce_hosts),
        api=api,
    )
    return EXIT_OK
