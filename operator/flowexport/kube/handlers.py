"""Kopf handlers for FlowExport: thin wiring from Kubernetes events to the operator's parts.

- create/update/resume: reconcile (subscription + PCE probe), see `reconcile.py`;
- a timer per FlowExport: reconcile again when due (drift repair, retries) or when a Secret
  it read has changed;
- a daemon per FlowExport: its ingestion worker, see `worker.py`;
- delete: remove what the FlowExport created, per `deletionPolicy`, behind the finalizer.

The process's state is the `Operator` in kopf's memo (`memo.operator`, set by `runner.run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf

from flowexport import lifecycle
from flowexport.api.conditions import ConditionType, ConditionUpdate
from flowexport.api.models import GROUP, PLURAL, VERSION
from flowexport.api.validation import SpecError, parse_spec
from flowexport.errors import FlowExportError
from flowexport.kube.api import CRD_MISSING
from flowexport.kube.events import configure_posting
from flowexport.kube.reconcile import reconcile, release_secret
from flowexport.kube.reconcile import resync as resync_if_due
from flowexport.kube.shards import uid_of
from flowexport.kube.state import Operator
from flowexport.kube.worker import work
from flowexport.pipeline import STOP_GRACE_SECONDS

log = logging.getLogger("flowexport.operator")

FINALIZER = "flowexport.io/cleanup"
#: Seconds between the resync timer's checks (it reconciles only when due or a Secret moved).
RESYNC_TICK_SECONDS = 10.0
#: Seconds before retrying a failed clean-up.
CLEANUP_RETRY_SECONDS = 30.0
#: Seconds before a replica that does not own a deleted FlowExport looks at it again.
SHARD_WAIT_SECONDS = 5.0


def _operator(memo: kopf.Memo) -> Operator:
    operator: Operator = memo.operator
    return operator


def _key(body: kopf.Body) -> tuple[str, str]:
    return body.metadata.namespace or "", body.metadata.name or ""


def _uid(body: kopf.Body) -> str:
    return uid_of(body["metadata"])


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Finalizer name; kopf's own bookkeeping in annotations (the status schema is ours);
    Events reported as the operator's."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="flowexport.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="flowexport.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    configure_posting(settings)
    op = _operator(memo)
    if op.shards.enabled:
        memo.shard_task = asyncio.create_task(op.shards.run(), name="shards")
    # Without patterns to resolve, kopf's cluster-wide watches of namespaces and CRDs buy
    # nothing but the RBAC to read them: the CRD must exist when the operator starts instead.
    settings.scanning.disabled = not op.scan_cluster
    if settings.scanning.disabled and not await op.api.serves_flowexports():
        # kopf would run idle, watching nothing, until restarted: say so and exit instead.
        raise kopf.PermanentError(CRD_MISSING)


@kopf.on.cleanup()
async def leave(memo: kopf.Memo, **_: Any) -> None:
    """On a clean stop, hand this replica's FlowExports over at once (its Lease deleted)."""
    op = _operator(memo)
    task = getattr(memo, "shard_task", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if op.shards.enabled:
        await op.shards.leave()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod, the service account; elsewhere the kubeconfig that KUBECONFIG names now."""
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
    return info or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile_on_change(
    body: kopf.Body, status: kopf.Status, memo: kopf.Memo, reason: str, **_: Any
) -> None:
    """Reconcile now; an invalid spec is permanent until the spec changes."""
    op = _operator(memo)
    namespace, name = _key(body)
    if not op.shards.owns(_uid(body)):
        return  # another replica's (its resync takes it up when it moves here)
    log.info("%s/%s: reconcile on %s", namespace, name, reason)
    try:
        await reconcile(op, op.export(*_key(body), dict(status)), body)
    except SpecError as exc:
        raise kopf.PermanentError(str(exc)) from None


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_TICK_SECONDS, initial_delay=RESYNC_TICK_SECONDS)
async def resync(body: kopf.Body, status: kopf.Status, memo: kopf.Memo, **_: Any) -> None:
    """Reconcile when due (drift repair, scheduled retries, a generation not yet reconciled)
    or when a Secret changed; only the FlowExports this replica owns."""
    op = _operator(memo)
    if op.shards.owns(_uid(body)):
        await resync_if_due(op, op.export(*_key(body), dict(status)), body)


# On stop, the worker gets a graceful phase longer than the pipeline's grace for an upload in
# flight (`STOP_GRACE_SECONDS`) plus the final status write: it saves its cursor and exits.
# Only then does kopf cancel it, so a SIGTERM ends the operator within about 10 s.
@kopf.daemon(
    GROUP,
    VERSION,
    PLURAL,
    cancellation_backoff=STOP_GRACE_SECONDS + 2.0,
    cancellation_timeout=2.0,
    cancellation_polling=0.5,
)
async def ingest(
    stopped: kopf.DaemonStopped, body: kopf.Body, status: kopf.Status, memo: kopf.Memo, **_: Any
) -> None:
    """The ingestion worker of one FlowExport."""
    op = _operator(memo)
    await work(op, op.export(*_key(body), dict(status)), body, stopped)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def cleanup(body: kopf.Body, spec: kopf.Spec, memo: kopf.Memo, **_: Any) -> None:
    """Remove what this FlowExport created, per its deletion policy (the replica that owns it
    does; the others wait, so the finalizer goes only once the clean-up is done)."""
    op = _operator(memo)
    uid = _uid(body)
    if not op.shards.owns(uid):
        owner = op.shards.owner(uid)
        raise kopf.TemporaryError(f"cleaned up by replica {owner}", delay=SHARD_WAIT_SECONDS)
    await clean_up(op, body, dict(spec))


#: How long the clean-up waits for the FlowExport's worker to stop (kopf stops it when the
#: deletion starts; a stop takes at most the upload grace and a status write).
WORKER_STOP_SECONDS = 30.0


async def _worker_stopped(op: Operator, namespace: str, name: str) -> None:
    """Wait for the FlowExport's worker to stop, so nothing it does (a workload sync, a peer
    workload before an upload) lands after the clean-up; raises kopf.TemporaryError if not."""
    deadline = asyncio.get_running_loop().time() + WORKER_STOP_SECONDS
    while (namespace, name) in op.working:
        if asyncio.get_running_loop().time() > deadline:
            raise kopf.TemporaryError("waiting for the ingestion worker to stop", delay=5)
        await asyncio.sleep(0.1)


#: Annotation that lets an admin release a FlowExport whose clean-up cannot succeed, without
#: touching AWS (what it created stays there).
SKIP_CLEANUP_ANNOTATION = "flowexport.io/skip-cleanup"


async def clean_up(op: Operator, body: Any, raw_spec: dict[str, Any]) -> None:
    """The delete handler's body: raises kopf.TemporaryError to be retried, after saying why
    in a condition and an Event."""
    metadata = body["metadata"]
    namespace, name = metadata.get("namespace") or "", metadata.get("name") or ""
    uid = uid_of(metadata)
    if uid in op.cleaned_up:
        return  # kopf runs the deletion again when a daemon stops late: done already
    try:
        spec = parse_spec(raw_spec)
    except SpecError:
        op.forget(namespace, name)
        return  # an invalid spec never subscribed anything
    annotations = metadata.get("annotations") or {}
    if annotations.get(SKIP_CLEANUP_ANNOTATION) == "true":
        op.events.post(
            body,
            "Warning",
            "CleanupSkipped",
            f"{SKIP_CLEANUP_ANNOTATION} is set: the AWS resources and PCE workloads are left "
            "as they are",
        )
    else:
        await _worker_stopped(op, namespace, name)
        try:
            done = await lifecycle.clean_up(
                spec, f"{namespace}/{name}", op.secrets(namespace, spec)
            )
        except FlowExportError as exc:
            message = (
                f"cannot clean up: {exc}; to release this FlowExport without touching AWS or "
                f"the PCE, annotate it {SKIP_CLEANUP_ANNOTATION}=true"
            )
            op.events.post(body, "Warning", exc.reason, message)
            board = op.export(namespace, name).board
            update = ConditionUpdate(ConditionType.SUBSCRIPTION_READY, False, exc.reason, message)
            board.apply([update])
            with contextlib.suppress(Exception):  # the status is best effort while deleting
                await board.write(force=True)
            raise kopf.TemporaryError(str(exc), delay=CLEANUP_RETRY_SECONDS) from None
        for what in done.removed:
            op.events.post(body, "Normal", "Deleted", what)
        for what in done.left:
            op.events.post(body, "Warning", "CleanupIncomplete", what)
    op.forget(namespace, name)
    op.cleaned_up.add(uid)
    await release_secret(op, namespace, spec)
