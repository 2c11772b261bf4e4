"""`flowexport sync`: run one FlowExport outside Kubernetes, as the operator would."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flowexport.api.models import Condition, Counts, FlowExportStatus
from flowexport.api.validation import SpecError
from flowexport.aws.errors import AwsError
from flowexport.aws.reader import initial_cursor
from flowexport.aws.session import AwsClients, AwsKeys, AwsTarget, make_clients
from flowexport.aws.subscription import Subscription, ensure_subscription
from flowexport.commands.common import EXIT_OK, EXIT_REJECTED, UsageError
from flowexport.manifest import Manifest, ManifestError, load_manifest
from flowexport.pce.client import PCEClient, PCECredentials
from flowexport.pce.errors import PCEError
from flowexport.pipeline import Pipeline, Progress, build_pipeline
from flowexport.status import set_condition, with_ready

log = logging.getLogger("flowexport.sync")

#: Attempts at the subscription before a transient AWS failure ends a sync.
SUBSCRIBE_ATTEMPTS = 5


def add_parser(commands: Any) -> None:
    """Register the subcommand."""
    parser = commands.add_parser(
        "sync",
        help="run one FlowExport outside Kubernetes (ensure, ingest, upload, print status)",
        description=(
            "Run the FlowExport in FILE (with the Secrets it references in the same file, or "
            "PCE_API_KEY/PCE_API_SECRET and the AWS default credential chain from the "
            "environment): ensure the flow-log subscription, ingest, upload, and print the "
            "status the operator would write, as JSON. With --once: ingest until caught up "
            "and exit 0 (all uploaded), 1 (some flows rejected) or 2 (configuration, "
            "permission or connection errors). Without: poll until SIGINT/SIGTERM, then finish "
            "the batch in flight and save the cursor."
        ),
    )
    parser.add_argument("-f", "--file", type=Path, required=True, help="FlowExport manifest")
    parser.add_argument("--once", action="store_true", help="ingest until caught up, then exit")
    parser.add_argument("--state", type=Path, help="JSON file keeping the cursor and counts")
    parser.add_argument(
        "--settle",
        type=float,
        default=15.0,
        help="seconds an event must have been ingested before it is read (default 15)",
    )
    parser.set_defaults(run=run)


@dataclass
class SyncState:
    """What a sync observed, for its status and exit code."""

    manifest: Manifest
    conditions: list[Condition] = field(default_factory=list)
    subscription: Subscription | None = None
    progress: Progress | None = None
    failed_at_start: int = 0

    def condition(self, type_: str, ok: bool | None, reason: str, message: str) -> None:
        now = datetime.now(UTC)
        generation = self.manifest.generation
        self.conditions = set_condition(
            self.conditions, type_, ok, reason, message, generation, now
        )
        self.conditions = with_ready(self.conditions, generation, now)

    def status(self) -> dict[str, Any]:
        progress = self.progress
        counts = Counts()
        if progress is not None:
            counts = Counts(
                records_read=progress.records_read,
                records_skipped=progress.records_skipped,
                flows_uploaded=progress.flows_uploaded,
                flows_failed=progress.flows_failed,
                batches_uploaded=progress.batches_uploaded,
            )
        status = FlowExportStatus(
            observed_generation=self.manifest.generation,
            conditions=self.conditions,
            flow_log_id=self.subscription.flow_log_id if self.subscription else None,
            log_group_arn=self.subscription.log_group_arn if self.subscription else None,
            counts=counts,
            last_upload_time=progress.last_upload_time if progress else None,
            lag_seconds=progress.lag_seconds if progress else None,
            cursor=progress.cursor.to_status() if progress else None,
        )
        return status.model_dump(by_alias=True, mode="json", exclude_none=True)


def run(args: argparse.Namespace) -> int:
    """Sync once or until signalled; print the status as JSON on stdout."""
    try:
        manifest = load_manifest(args.file)
    except SpecError as exc:
        problems = "; ".join(f"{path}: {message}" for path, message in exc.problems)
        raise UsageError(f"invalid FlowExport: {problems}") from None
    except ManifestError as exc:
        raise UsageError(str(exc)) from None
    state = SyncState(manifest)
    try:
        code = asyncio.run(_sync(args, state))
    finally:
        print(json.dumps(state.status(), indent=2), flush=True)
    return code


def _pce_client(manifest: Manifest) -> PCEClient:
    pce = manifest.spec.pce
    ref = pce.credentials_secret_ref.name
    username = manifest.secret(ref, "username") or os.environ.get("PCE_API_KEY")
    secret = manifest.secret(ref, "password") or os.environ.get("PCE_API_SECRET")
    if not username or not secret:
        raise UsageError(
            f"no PCE credentials: put Secret {ref} (keys username, password) in the file or "
            "set PCE_API_KEY and PCE_API_SECRET"
        )
    ca_pem = None
    if pce.ca_bundle_secret_ref is not None:
        ca_pem = manifest.secret(pce.ca_bundle_secret_ref.name, "ca.crt")
        if ca_pem is None:
            raise UsageError(f"Secret {pce.ca_bundle_secret_ref.name} with key ca.crt not found")
    try:
        return PCEClient(
            pce.url,
            pce.org_id,
            PCECredentials(username, secret),
            ca_pem=ca_pem,
            insecure=pce.insecure_skip_tls_verify,
        )
    except PCEError as exc:
        raise UsageError(str(exc)) from None


def _aws_target(manifest: Manifest) -> AwsTarget:
    aws = manifest.spec.aws
    keys = None
    if aws.credentials_secret_ref is not None:
        ref = aws.credentials_secret_ref.name
        key_id = manifest.secret(ref, "aws_access_key_id")
        secret = manifest.secret(ref, "aws_secret_access_key")
        if key_id and secret:
            keys = AwsKeys(key_id, secret, manifest.secret(ref, "aws_session_token"))
        else:
            log.info("Secret %s not in the file: using the AWS default credential chain", ref)
    return AwsTarget(aws.region, aws.endpoint_url, aws.role_arn, keys, aws.api_requests_per_second)


async def _subscribe(state: SyncState, clients: AwsClients) -> Subscription:
    spec = state.manifest.spec
    for attempt in range(1, SUBSCRIBE_ATTEMPTS + 1):
        try:
            subscription = await asyncio.to_thread(
                ensure_subscription, clients, spec.aws, state.manifest.owner
            )
        except AwsError as exc:
            state.condition("SubscriptionReady", False, exc.reason, str(exc))
            if exc.terminal or attempt == SUBSCRIBE_ATTEMPTS:
                raise UsageError(str(exc)) from None
            await asyncio.sleep(min(30.0, 2.0**attempt))
            continue
        for change in subscription.changes:
            log.info("%s", change)
        if subscription.delivery_error:
            state.condition(
                "SubscriptionReady", False, "DeliveryFailed", subscription.delivery_error
            )
        else:
            owned = "created by" if subscription.flow_log_owned else "adopted by"
            message = f"flow log {subscription.flow_log_id} {owned} this FlowExport"
            state.condition("SubscriptionReady", True, "Subscribed", message)
        state.subscription = subscription
        return subscription
    raise AssertionError("unreachable")


def _load_progress(args: argparse.Namespace, state: SyncState) -> Progress:
    if args.state is not None and args.state.exists():
        try:
            return Progress.from_state(json.loads(args.state.read_text()))
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot resume from {args.state}: {exc}") from None
    start = state.manifest.spec.ingestion.start_from
    return Progress(initial_cursor(start, int(time.time() * 1000)))


async def _sync(args: argparse.Namespace, state: SyncState) -> int:
    spec = state.manifest.spec
    pce = _pce_client(state.manifest)
    clients = make_clients(_aws_target(state.manifest))
    async with pce:
        subscription = await _subscribe(state, clients)
        try:
            await pce.probe()
        except PCEError as exc:
            state.condition("PCEReachable", False, exc.reason, str(exc))
            raise UsageError(str(exc)) from None
        state.condition("PCEReachable", True, "Reachable", f"{spec.pce.url} org {spec.pce.org_id}")
        state.progress = progress = _load_progress(args, state)
        state.failed_at_start = progress.flows_failed
        if spec.suspend:
            state.condition("Ingesting", False, "Suspended", "spec.suspend is true")
            return EXIT_OK

        async def save(saved: Progress) -> None:
            state.progress = saved
            if args.state is not None:
                temporary = args.state.with_suffix(args.state.suffix + ".tmp")
                temporary.write_text(json.dumps(saved.to_state()))
                temporary.replace(args.state)

        ingestion = spec.ingestion
        pipeline = build_pipeline(
            spec,
            clients,
            subscription.log_format,
            pce,
            progress,
            save,
            settle_seconds=args.settle,
        )
        state.condition("Ingesting", True, "Ingesting", "reading the log group")
        try:
            if args.once:
                state.progress = await pipeline.run_once()
            else:
                await _run_until_signalled(pipeline, state, ingestion.poll_interval_seconds)
        except (AwsError, PCEError) as exc:
            state.condition("Ingesting", False, exc.reason, str(exc))
            state.progress = pipeline.progress
            raise UsageError(str(exc)) from None
        state.progress = pipeline.progress
    failed = state.progress.flows_failed - state.failed_at_start
    return EXIT_REJECTED if failed else EXIT_OK


async def _run_until_signalled(pipeline: Pipeline, state: SyncState, poll: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def failing(exc: Exception) -> None:
        state.condition("Ingesting", False, getattr(exc, "reason", "Retrying"), f"retrying: {exc}")

    async def healthy() -> None:
        state.condition("Ingesting", True, "Ingesting", "caught up with the log group")

    await pipeline.run_forever(stop, poll, on_error=failing, on_success=healthy)
    log.info("stopped; cursor saved")
    sys.stderr.flush()
