"""`flowexport run`: the operator."""

from __future__ import annotations

import argparse
import logging
import os
import re
import socket
from typing import Any

import kopf

from flowexport.aws import budget
from flowexport.commands.common import EXIT_OK, UsageError
from flowexport.kube import metrics
from flowexport.kube.replicas import SOLO, Replicas, Timing, timing
from flowexport.kube.runner import StartupError, has_patterns, preflight
from flowexport.kube.runner import run as run_operator
from flowexport.kube.state import RESYNC_SECONDS
from flowexport.sources import s3 as s3_source
from flowexport.urls import parse_host_port

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
            "FlowExport, write status and Events. One replica handles every FlowExport; with "
            "--shard-namespace, several replicas share them (each FlowExport handled by one)."
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
        metavar="HOST[:PORT]",
        dest="allowed_pce_hosts",
        help=(
            "a PCE host and port the operator may send API keys to (repeatable; HOST alone "
            "means port 443, an IPv6 address goes in brackets); none given: no FlowExport's "
            "key is sent anywhere (PCEHostNotAllowed)"
        ),
    )
    parser.add_argument(
        "--read-secrets-by-name",
        action="store_true",
        help=(
            "read each Secret a FlowExport names with a GET, instead of one label-selected "
            "list+watch per namespace: for RBAC that grants get on named Secrets only "
            "(chart: rbac.secretNames)"
        ),
    )
    parser.add_argument(
        "--account-grants",
        choices=["Enforce", "Off"],
        default=os.environ.get("FLOWEXPORT_ACCOUNT_GRANTS", "Enforce"),
        help=(
            "Enforce (default; env FLOWEXPORT_ACCOUNT_GRANTS): a FlowExport reaches AWS "
            "through the operator's identity (roleArn, accountId or the pod's own) only where "
            "an AccountGrant grants its namespace that account; Off: any roleArn, as before "
            "grants (docs/accounts.md)"
        ),
    )
    parser.add_argument(
        "--hold-namespace-access",
        metavar="NAME",
        help=(
            "the RoleBinding (this name, in each --namespace; of a ClusterRole) that gives the "
            "operator its access there: held with the finalizer flowexport.io/operator-access "
            "while a FlowExport or FlowExportSet there awaits its clean-up, so deleting the "
            "namespace cannot take the access away first (the chart's namespaced install "
            "passes it)"
        ),
    )
    quotas = parser.add_argument_group("AWS read quotas (per account and region, shared)")
    quotas.add_argument(
        "--filter-log-events-rps",
        type=float,
        default=None,
        metavar="RATE",
        help=(
            "FilterLogEvents requests per second all FlowExports of one account and region "
            "share, in turns (default 5, AWS's quota, or $FLOWEXPORT_FILTER_LOG_EVENTS_PER_SECOND; "
            "raise it with a raised quota; 0: no shared budget). The account's whole quota: "
            "with --shard-namespace each live replica keeps 1/n of this and of --aws-reads-rps"
        ),
    )
    quotas.add_argument(
        "--aws-reads-rps",
        type=float,
        default=None,
        metavar="RATE",
        help=(
            "CloudWatch Logs Describe*/List* requests per second per account and region, and "
            "EC2 Describe* the same, halved on each throttle and recovering after (default 20, "
            "or $FLOWEXPORT_AWS_READS_PER_SECOND; 0: no budget)"
        ),
    )
    parser.add_argument(
        "--s3-visibility-seconds",
        type=int,
        default=None,
        metavar="S",
        help=(
            "mode s3: how long a received message stays hidden (default 120, or "
            "$FLOWEXPORT_S3_VISIBILITY_SECONDS; 3..43200), extended every third of it while "
            "its objects are read: a killed replica's message is read again after this"
        ),
    )
    shards = parser.add_argument_group("sharding over several replicas")
    shards.add_argument(
        "--shard-namespace",
        metavar="NS",
        help=(
            "spread FlowExports over the replicas that hold Leases in this namespace (each "
            "FlowExport handled by one replica; a dead replica's taken over); default: off, "
            "this replica handles every FlowExport"
        ),
    )
    shards.add_argument(
        "--replica-id",
        metavar="ID",
        help="this replica's name among them (default: the host name, i.e. the pod name)",
    )
    shards.add_argument(
        "--shard-lease-seconds",
        type=float,
        default=Timing().lease,
        metavar="S",
        help=(
            "how long a replica's Lease lasts unrenewed (default 15): a dead replica's "
            "FlowExports move within about twice this"
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
    if args.hold_namespace_access and (args.all_namespaces or has_patterns(args.namespace)):
        raise UsageError("--hold-namespace-access needs namespaces by name (--namespace NS)")
    try:
        budget.configure(args.filter_log_events_rps, args.aws_reads_rps)
    except ValueError:
        raise UsageError("--filter-log-events-rps and --aws-reads-rps must be >= 0") from None
    try:
        s3_source.configure(args.s3_visibility_seconds)
    except ValueError as exc:
        raise UsageError(f"--s3-visibility-seconds: {exc}") from None
    if args.metrics_port is not None:
        if not 0 < args.metrics_port < 65536:
            raise UsageError("--metrics-port must be a TCP port (1-65535)")
        try:
            metrics.serve(args.metrics_port)
        except OSError as exc:
            raise UsageError(f"cannot serve metrics on port {args.metrics_port}: {exc}") from None
    if args.shard_lease_seconds < 3:
        raise UsageError("--shard-lease-seconds must be at least 3")
    allowed = _allowed_pce_hosts(args.allowed_pce_hosts)
    identity = _replica_id(args)
    try:
        api = preflight(check_crd=not has_patterns(args.namespace))
    except StartupError as exc:
        raise UsageError(str(exc)) from None
    if not allowed:
        logging.getLogger("flowexport.operator").warning(
            "no --allowed-pce-host: no FlowExport's PCE API key will be sent anywhere "
            "(each reports PCEHostNotAllowed) until its PCE is allowed"
        )
    run_operator(
        args.namespace,
        args.all_namespaces,
        args.liveness,
        args.settle,
        args.resync_seconds,
        allowed_pce_hosts=allowed,
        watch_secrets=not args.read_secrets_by_name,
        account_grants=args.account_grants,
        hold_namespace_access=args.hold_namespace_access,
        api=api,
        replicas=Replicas(
            identity,
            args.shard_namespace,
            timing=timing(args.shard_lease_seconds),
            api=api,
            on_members=budget.share_among,
        )
        if args.shard_namespace
        else SOLO,
    )
    return EXIT_OK


def _allowed_pce_hosts(given: list[str]) -> frozenset[tuple[str, int]]:
    """--allowed-pce-host values as (host, port)s; a usage error names a bad one."""
    allowed = set()
    for text in given:
        try:
            allowed.add(parse_host_port(text))
        except ValueError as exc:
            raise UsageError(f"--allowed-pce-host: {exc}") from None
    return frozenset(allowed)


#: What a replica id may be: it names a Lease (flowexport-shard-<id>).
REPLICA_ID = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _replica_id(args: argparse.Namespace) -> str:
    """This replica's id: --replica-id, else the host name (checked when sharding)."""
    if args.replica_id is not None:
        if not REPLICA_ID.fullmatch(args.replica_id):
            raise UsageError("--replica-id must be a DNS label (lower case, digits, '-')")
        return str(args.replica_id)
    identity = socket.gethostname().lower()
    if args.shard_namespace and not REPLICA_ID.fullmatch(identity):
        raise UsageError(f"the host name {identity!r} is no replica id: give --replica-id")
    return identity
