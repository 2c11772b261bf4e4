"""Kopf handlers for FlowExport: reconcile the subscription, run one worker each, clean up.

- create/update/resume: validate the spec, ensure the flow-log subscription, probe the PCE,
  and report `SubscriptionReady` / `PCEReachable` with reasons a user can act on.
- a daemon per FlowExport runs the ingestion pipeline; it restarts its pipeline when the spec
  (generation) or a referenced Secret changes, idles while `suspend` is true, resumes from the
  cursor in status after a restart, and reports `Ingesting`.
- delete: remove what the FlowExport created, per `deletionPolicy`, behind the finalizer.
Status is written by one `StatusBoard` per FlowExport; Events mark condition transitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import kopf

from flowexport.api.models import GROUP, PLURAL, VERSION, FlowExportSpec
from flowexport.api.validation import SpecError, parse_spec
from flowexport.aws.errors import AwsError
from flowexport.aws.reader import LogReader, initial_cursor
from flowexport.aws.session import AwsClients, AwsKeys, AwsTarget, RateLimiter, make_clients
from flowexport.aws.subscription import Subscription, delete_subscription, ensure_subscription
from flowexport.core.normalise import FlowFilter
from flowexport.kube.api import KubeApi
from flowexport.kube.board import StatusBoard, Transition
from flowexport.pce.client import PCEClient, PCECredentials
from flowexport.pce.errors import PCEError
from flowexport.pipeline import Pipeline, Progress

FINALIZER = "flowexport.io/cleanup"
#: Seconds before retrying what only a spec, Secret or IAM change can fix.
TERMINAL_RETRY = 600.0
#: Seconds before retrying a transient failure.
TRANSIENT_RETRY = 30.0


class ConfigProblem(Exception):
    """Something the user must fix (a Secret, a key); carries a condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Export:
    """What the operator holds for one FlowExport."""

    board: StatusBoard
    subscription: Subscription | None = None
    secret_versions: dict[str, str] = field(default_factory=dict)


class Operator:
    """Process-wide state: the API client and the FlowExports being handled."""

    def __init__(self, settle_seconds: float = 15.0) -> None:
        self.api = KubeApi()
        self.exports: dict[tuple[str, str], Export] = {}
        self.settle_seconds = settle_seconds

    def export(self, namespace: str, name: str, status: dict[str, Any] | None = None) -> Export:
        key = (namespace, name)
        if key not in self.exports:
            board = StatusBoard(namespace, name, self.api.patch_status)
            board.load(status)
            self.exports[key] = Export(board)
        return self.exports[key]


_operator: Operator | None = None
settle_seconds = 15.0


def _state() -> Operator:
    global _operator  # noqa: PLW0603 - one operator per process, built at startup
    if _operator is None:
        _operator = Operator(settle_seconds)
    return _operator


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Finalizer name; kopf's own bookkeeping in annotations (the status schema is ours)."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="flowexport.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="flowexport.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    _state()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod, the service account; elsewhere the kubeconfig that KUBECONFIG names now."""
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
    return info or kopf.login_with_kubeconfig(**kwargs)


def _announce(body: kopf.Body, transitions: list[Transition]) -> None:
    for change in transitions:
        if change.type == "Ready" and change.ok:
            kopf.info(body, reason="Ready", message=change.message)
        elif change.ok is False:
            kopf.warn(body, reason=change.reason, message=f"{change.type}: {change.message}")
        elif change.ok:
            kopf.info(body, reason=change.reason, message=f"{change.type}: {change.message}")


async def _secret(op: Operator, export: Export, namespace: str, name: str) -> dict[str, str]:
    found = await op.api.read_secret(namespace, name)
    if found is None:
        raise ConfigProblem("SecretNotFound", f"Secret {namespace}/{name} does not exist")
    values, version = found
    export.secret_versions[name] = version
    return values


async def _aws_target(
    op: Operator, export: Export, namespace: str, spec: FlowExportSpec
) -> AwsTarget:
    aws = spec.aws
    keys = None
    if aws.credentials_secret_ref is not None:
        values = await _secret(op, export, namespace, aws.credentials_secret_ref.name)
        key_id, secret = values.get("aws_access_key_id"), values.get("aws_secret_access_key")
        if not key_id or not secret:
            raise ConfigProblem(
                "SecretInvalid",
                f"Secret {aws.credentials_secret_ref.name} needs keys aws_access_key_id and "
                "aws_secret_access_key",
            )
        keys = AwsKeys(key_id, secret, values.get("aws_session_token"))
    return AwsTarget(aws.region, aws.endpoint_url, aws.role_arn, keys, aws.api_requests_per_second)


async def _pce_client(
    op: Operator, export: Export, namespace: str, spec: FlowExportSpec
) -> PCEClient:
    pce = spec.pce
    values = await _secret(op, export, namespace, pce.credentials_secret_ref.name)
    username, secret = values.get("username"), values.get("password")
    if not username or not secret:
        raise ConfigProblem(
            "SecretInvalid",
            f"Secret {pce.credentials_secret_ref.name} needs keys username (the API key's auth "
            "username) and password (its secret)",
        )
    ca_pem = None
    if pce.ca_bundle_secret_ref is not None:
        ca_pem = (await _secret(op, export, namespace, pce.ca_bundle_secret_ref.name)).get("ca.crt")
        if not ca_pem:
            raise ConfigProblem(
                "SecretInvalid", f"Secret {pce.ca_bundle_secret_ref.name} has no ca.crt"
            )
    try:
        return PCEClient(pce.url, pce.org_id, PCECredentials(username, secret), ca_pem=ca_pem,
                         insecure=pce.insecure_skip_tls_verify)  # fmt: skip
    except PCEError as exc:
        raise ConfigProblem(exc.reason, str(exc)) from None


def _spec_or_report(
    export: Export, raw: dict[str, Any], generation: int | None, body: kopf.Body
) -> FlowExportSpec:
    try:
        return parse_spec(raw)
    except SpecError as exc:
        changes = export.board.condition(
            "SubscriptionReady", False, "InvalidSpec", str(exc), generation
        )
        _announce(body, changes)
        raise


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile(body: kopf.Body, spec: kopf.Spec, meta: kopf.Meta, status: kopf.Status,
                    namespace: str, name: str, **_: Any) -> None:  # fmt: skip
    """Ensure the subscription and check the PCE; report both as conditions."""
    op = _state()
    export = op.export(namespace, name, dict(status))
    board = export.board
    generation = meta.get("generation")
    board.generation = generation
    try:
        parsed = _spec_or_report(export, dict(spec), generation, body)
    except SpecError as exc:
        await board.write(force=True)
        raise kopf.PermanentError(str(exc)) from None
    try:
        target = await _aws_target(op, export, namespace, parsed)
        clients = make_clients(target)
        subscription = await asyncio.to_thread(
            ensure_subscription, clients, parsed.aws, f"{namespace}/{name}"
        )
    except ConfigProblem as exc:
        _announce(
            body, board.condition("SubscriptionReady", False, exc.reason, str(exc), generation)
        )
        await board.write(force=True)
        raise kopf.TemporaryError(str(exc), delay=TERMINAL_RETRY) from None
    except AwsError as exc:
        _announce(
            body, board.condition("SubscriptionReady", False, exc.reason, str(exc), generation)
        )
        await board.write(force=True)
        raise kopf.TemporaryError(
            str(exc), delay=TERMINAL_RETRY if exc.terminal else TRANSIENT_RETRY
        ) from None
    export.subscription = subscription
    for change in subscription.changes:
        kopf.info(body, reason="SubscriptionChanged", message=change)
    board.update(flowLogId=subscription.flow_log_id, logGroupArn=subscription.log_group_arn)
    if subscription.delivery_error:
        changes = board.condition(
            "SubscriptionReady", False, "DeliveryFailed", subscription.delivery_error, generation
        )
    else:
        how = "created by" if subscription.flow_log_owned else "adopted by"
        changes = board.condition("SubscriptionReady", True, "Subscribed",
                                  f"flow log {subscription.flow_log_id} {how} this FlowExport", generation)  # fmt: skip
    _announce(body, changes)
    await _probe(op, export, namespace, parsed, generation, body)
    await board.write(force=True)


async def _probe(op: Operator, export: Export, namespace: str, spec: FlowExportSpec,
                 generation: int | None, body: kopf.Body) -> bool:  # fmt: skip
    board = export.board
    try:
        async with await _pce_client(op, export, namespace, spec) as pce:
            await pce.probe()
    except (ConfigProblem, PCEError) as exc:
        _announce(body, board.condition("PCEReachable", False, exc.reason, str(exc), generation))
        return False
    _announce(body, board.condition("PCEReachable", True, "Reachable",
                                    f"{spec.pce.url} org {spec.pce.org_id}", generation))  # fmt: skip
    return True


# A short graceful phase: the worker sees `stopped`, saves its cursor and exits; kopf then
# re-checks within the backoff instead of after the whole timeout.
@kopf.daemon(
    GROUP,
    VERSION,
    PLURAL,
    cancellation_backoff=2.0,
    cancellation_timeout=30.0,
    cancellation_polling=1.0,
)
async def ingest(stopped: kopf.DaemonStopped, body: kopf.Body, spec: kopf.Spec, meta: kopf.Meta,
                 status: kopf.Status, namespace: str, name: str, logger: logging.Logger,
                 **_: Any) -> None:  # fmt: skip
    """The ingestion worker of one FlowExport; rebuilt when its spec or Secrets change."""
    op = _state()
    export = op.export(namespace, name, dict(status))
    board = export.board
    try:
        while not stopped:
            generation = meta.get("generation")
            try:
                parsed = parse_spec(dict(spec))
            except SpecError:
                await _sleep(stopped, 5.0)  # reconcile reports it; wait for a new spec
                continue
            if parsed.suspend:
                _announce(
                    body,
                    board.condition(
                        "Ingesting", False, "Suspended", "spec.suspend is true", generation
                    ),
                )
                await board.write(force=True)
                await _sleep(stopped, 2.0)
                continue
            if export.subscription is None:
                await _sleep(stopped, 1.0)  # reconcile has not subscribed yet
                continue
            await _run_pipeline(
                op, export, parsed, namespace, name, generation, stopped, body, meta, logger
            )
    finally:
        await board.write(force=True)


async def _sleep(stopped: kopf.DaemonStopped, seconds: float) -> None:
    """Sleep, waking early when kopf stops the daemon."""
    await stopped.wait(seconds)


async def _run_pipeline(op: Operator, export: Export, spec: FlowExportSpec, namespace: str, name: str,
                        generation: int | None, stopped: kopf.DaemonStopped, body: kopf.Body,
                        meta: kopf.Meta, logger: logging.Logger) -> None:  # fmt: skip
    """Ingest with one pipeline until stopped, the generation changes or a Secret changes."""
    board = export.board
    subscription = export.subscription
    assert subscription is not None
    try:
        clients = make_clients(await _aws_target(op, export, namespace, spec))
        pce = await _pce_client(op, export, namespace, spec)
    except ConfigProblem as exc:
        _announce(body, board.condition("Ingesting", False, exc.reason, str(exc), generation))
        await board.write(force=True)
        await _sleep(stopped, TRANSIENT_RETRY)
        return
    ingestion = spec.ingestion
    progress = board.progress or Progress(
        initial_cursor(ingestion.start_from, int(time.time() * 1000))
    )

    async def checkpoint(saved: Progress) -> None:
        board.record(saved)
        await board.write()

    reader = LogReader(clients, spec.aws.log_group_name, ingestion.lookback_seconds,
                       settle_seconds=op.settle_seconds,
                       limiter=RateLimiter(spec.aws.api_requests_per_second))  # fmt: skip
    flow_filter = FlowFilter.build(
        ingestion.actions, ingestion.include_cidrs, ingestion.exclude_cidrs
    )
    pipeline = Pipeline(reader, subscription.log_format, flow_filter, pce, progress, checkpoint,
                        batch_size=ingestion.batch_size,
                        window_seconds=ingestion.aggregation_window_seconds)  # fmt: skip
    stop = asyncio.Event()

    async def watch_for_changes() -> None:
        while not stop.is_set():
            await _sleep(stopped, 1.0)
            if (
                stopped
                or meta.get("generation") != generation
                or await _secrets_changed(op, export, namespace)
            ):
                stop.set()

    async def healthy() -> None:
        _announce(
            body,
            board.condition(
                "Ingesting", True, "Ingesting", "caught up with the log group", generation
            ),
        )
        board.record(pipeline.progress)
        await board.write()

    async def failing(exc: Exception) -> None:
        reason = getattr(exc, "reason", "IngestionFailed")
        _announce(body, board.condition("Ingesting", False, reason, f"retrying: {exc}", generation))
        await board.write(force=True)

    watcher = asyncio.create_task(watch_for_changes())
    try:
        async with pce:
            await pipeline.run_forever(
                stop, float(ingestion.poll_interval_seconds), failing, healthy
            )
    except (AwsError, PCEError) as exc:
        _announce(
            body,
            board.condition(
                "Ingesting", False, getattr(exc, "reason", "Failed"), str(exc), generation
            ),
        )
        await board.write(force=True)
        await _sleep(stopped, TERMINAL_RETRY)
    finally:
        stop.set()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        board.record(pipeline.progress)
        await board.write(force=True)
        logger.info("ingestion worker for %s/%s stopped its pipeline", namespace, name)


async def _secrets_changed(op: Operator, export: Export, namespace: str) -> bool:
    for secret_name, version in list(export.secret_versions.items()):
        found = await op.api.read_secret(namespace, secret_name)
        if found is None or found[1] != version:
            return True
    return False


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def cleanup(body: kopf.Body, spec: kopf.Spec, namespace: str, name: str, **_: Any) -> None:
    """Remove what this FlowExport created, per its deletion policy."""
    op = _state()
    export = op.export(namespace, name)
    try:
        parsed = parse_spec(dict(spec))
    except SpecError:
        op.exports.pop((namespace, name), None)
        return  # an invalid spec never subscribed anything
    try:
        clients = make_clients(await _aws_target(op, export, namespace, parsed))
        removed = await asyncio.to_thread(delete_subscription, clients, parsed.aws, f"{namespace}/{name}",
                                          parsed.deletion_policy)  # fmt: skip
    except ConfigProblem as exc:
        kopf.warn(body, reason=exc.reason, message=f"cannot clean up AWS resources: {exc}")
        raise kopf.TemporaryError(str(exc), delay=TRANSIENT_RETRY) from None
    except AwsError as exc:
        kopf.warn(body, reason=exc.reason, message=f"cannot clean up AWS resources: {exc}")
        raise kopf.TemporaryError(str(exc), delay=TRANSIENT_RETRY) from None
    for what in removed:
        kopf.info(body, reason="Deleted", message=what)
    op.exports.pop((namespace, name), None)


__all__ = ["AwsClients", "cleanup", "configure", "ingest", "reconcile"]
