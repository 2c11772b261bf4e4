"""Kopf handlers for FlowExport: thin wiring from Kubernetes events to the operator's parts.

- create/update/resume: reconcile (subscription + PCE probe), see `reconcile.py`;
- a timer per FlowExport: reconcile again when due (drift repair, retries) or when a Secret
  it read has changed;
- a daemon per FlowExport: its ingestion worker, see `worker.py`;
- delete: remove what the FlowExport created, per `deletionPolicy`, behind the finalizer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf

from flowexport.api.models import GROUP, PLURAL, VERSION
from flowexport.api.validation import SpecError, parse_spec
from flowexport.aws.errors import AwsError
from flowexport.aws.session import make_clients
from flowexport.aws.subscription import delete_subscription
from flowexport.kube.events import note, warn
from flowexport.kube.reconcile import reconcile
from flowexport.kube.secrets import ConfigProblem, aws_target, secrets_changed
from flowexport.kube.state import RESYNC_SECONDS, Operator
from flowexport.kube.worker import work

FINALIZER = "flowexport.io/cleanup"
#: Seconds between the resync timer's checks (it reconciles only when due or a Secret moved).
RESYNC_TICK_SECONDS = 10.0
#: Seconds before retrying a failed clean-up.
CLEANUP_RETRY_SECONDS = 30.0


class _Process:
    """The one `Operator` of this process, built at startup (see `runner.run`)."""

    operator: Operator | None = None
    settle_seconds = 15.0
    resync_seconds = RESYNC_SECONDS
    scan_cluster = False


def _state() -> Operator:
    if _Process.operator is None:
        _Process.operator = Operator(_Process.settle_seconds, _Process.resync_seconds)
    return _Process.operator


def _key(body: kopf.Body) -> tuple[str, str]:
    return body.metadata.namespace or "", body.metadata.name or ""


def reset(
    settle_seconds: float, resync_seconds: float = RESYNC_SECONDS, scan_cluster: bool = False
) -> None:
    """Start afresh (a new run of the operator in this process). `scan_cluster`: let kopf
    watch namespaces and CRDs, which it needs to resolve namespace patterns."""
    _Process.operator = None
    _Process.settle_seconds = settle_seconds
    _Process.resync_seconds = resync_seconds
    _Process.scan_cluster = scan_cluster


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Finalizer name; kopf's own bookkeeping in annotations (the status schema is ours)."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="flowexport.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="flowexport.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    # Without patterns to resolve, kopf's cluster-wide watches of namespaces and CRDs buy
    # nothing but the RBAC to read them: the CRD must exist when the operator starts instead.
    settings.scanning.disabled = not _Process.scan_cluster
    operator = _state()
    if settings.scanning.disabled and not await operator.api.serves_flowexports():
        # kopf would run idle, watching nothing, until restarted: say so and exit instead.
        raise kopf.PermanentError(
            f"the FlowExport CRD ({PLURAL}.{GROUP}/{VERSION}) is not installed: apply "
            "crds/flowexport.yaml, then start the operator"
        )


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod, the service account; elsewhere the kubeconfig that KUBECONFIG names now."""
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
    return info or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile_on_change(body: kopf.Body, status: kopf.Status, **_: Any) -> None:
    """Reconcile now; an invalid spec is permanent until the spec changes."""
    op = _state()
    try:
        await reconcile(op, op.export(*_key(body), dict(status)), body)
    except SpecError as exc:
        raise kopf.PermanentError(str(exc)) from None


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_TICK_SECONDS, initial_delay=RESYNC_TICK_SECONDS)
async def resync(body: kopf.Body, status: kopf.Status, **_: Any) -> None:
    """Reconcile when due (drift repair, scheduled retries) or when a Secret changed."""
    op = _state()
    namespace, name = _key(body)
    export = op.export(namespace, name, dict(status))
    if export.due or await secrets_changed(op.api, export.secret_versions, namespace):
        with contextlib.suppress(SpecError):  # reported; waits for the spec to change
            await reconcile(op, export, body)


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
async def ingest(
    stopped: kopf.DaemonStopped, body: kopf.Body, status: kopf.Status, **_: Any
) -> None:
    """The ingestion worker of one FlowExport."""
    op = _state()
    await work(op, op.export(*_key(body), dict(status)), body, stopped)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def cleanup(body: kopf.Body, spec: kopf.Spec, **_: Any) -> None:
    """Remove what this FlowExport created, per its deletion policy."""
    op = _state()
    namespace, name = _key(body)
    try:
        parsed = parse_spec(dict(spec))
    except SpecError:
        op.forget(namespace, name)
        return  # an invalid spec never subscribed anything
    try:
        clients = make_clients(await aws_target(op.api, {}, namespace, parsed))
        removed = await asyncio.to_thread(
            delete_subscription, clients, parsed.aws, f"{namespace}/{name}", parsed.deletion_policy
        )
    except (ConfigProblem, AwsError) as exc:
        warn(body, exc.reason, f"cannot clean up AWS resources: {exc}")
        raise kopf.TemporaryError(str(exc), delay=CLEANUP_RETRY_SECONDS) from None
    for what in removed:
        note(body, "Deleted", what)
    op.forget(namespace, name)
