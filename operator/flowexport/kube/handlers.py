"""Kopf handlers for FlowExport: thin wiring from Kubernetes events to the operator's parts.

- create/update/resume: reconcile (subscription + PCE probe), see `reconcile.py`;
- a timer per FlowExport: reconcile again when due (drift repair, retries) or when a Secret
  it read has changed;
- a daemon per FlowExport: its ingestion worker, see `worker.py`;
- delete: remove what the FlowExport created, per `deletionPolicy`, behind the finalizer,
  see `cleanup.py`.

The process's state is the `Operator` in kopf's memo (`memo.operator`, set by `runner.run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf

from flowexport.api.models import GROUP, PLURAL, VERSION
from flowexport.api.sets import PLURAL as SET_PLURAL
from flowexport.api.validation import SpecError
from flowexport.kube.cleanup import clean_up
from flowexport.kube.client import CONNECT_SECONDS, CRD_MISSING, READ_SECONDS
from flowexport.kube.events import configure_posting
from flowexport.kube.reconcile import reconcile
from flowexport.kube.reconcile import resync as resync_if_due
from flowexport.kube.replicas import uid_of
from flowexport.kube.sets import Fleet
from flowexport.kube.state import Operator
from flowexport.kube.worker import work
from flowexport.pipeline import STOP_GRACE_SECONDS

log = logging.getLogger("flowexport.operator")

FINALIZER = "flowexport.io/cleanup"
#: Seconds between the resync timer's checks (it reconciles only when due or a Secret moved).
RESYNC_TICK_SECONDS = 10.0
#: Seconds before a replica that does not own a deleted FlowExport looks at it again.
SHARD_WAIT_SECONDS = 5.0
#: kopf's own API calls (patches, Events, the watches' connects): connect, and the whole call.
KOPF_CONNECT_SECONDS = CONNECT_SECONDS
KOPF_REQUEST_SECONDS = 2 * READ_SECONDS


def _operator(memo: kopf.Memo) -> Operator:
    operator: Operator = memo.operator
    return operator


def _key(body: kopf.Body) -> tuple[str, str]:
    return body.metadata.namespace or "", body.metadata.name or ""


def _uid(body: kopf.Body) -> str:
    return uid_of(body["metadata"])


def _poke_access(memo: kopf.Memo) -> None:
    """The namespaced install's access keeper (`kube/access.py`), if any, looks again now."""
    access = memo.get("access")
    if access is not None:
        access.poke()


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Finalizer name; kopf's own bookkeeping in annotations (the status schema is ours);
    Events reported as the operator's; a timeout on each of kopf's API calls (its default is
    five minutes, with no connect timeout)."""
    settings.persistence.finalizer = FINALIZER
    settings.networking.connect_timeout = KOPF_CONNECT_SECONDS
    settings.networking.request_timeout = KOPF_REQUEST_SECONDS
    settings.watching.connect_timeout = KOPF_CONNECT_SECONDS
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="flowexport.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="flowexport.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    configure_posting(settings)
    op = _operator(memo)
    if op.replicas.enabled:
        memo.shard_task = asyncio.create_task(op.replicas.run(), name="shards")
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
    if op.replicas.enabled:
        await op.replicas.leave()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod, the service account; elsewhere the kubeconfig that KUBECONFIG names now."""
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
    return info or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile_on_change(
    body: kopf.Body,
    status: kopf.Status,
    memo: kopf.Memo,
    reason: str,
    patch: kopf.Patch,
    **_: Any,
) -> None:
    """Reconcile now; an invalid spec is permanent until the spec changes."""
    op = _operator(memo)
    namespace, name = _key(body)
    if not op.replicas.owns(_uid(body)):
        return  # another replica's (its resync takes it up when it moves here)
    log.info("%s/%s: reconcile on %s", namespace, name, reason)
    _poke_access(memo)  # a new holder of the finalizer: its namespace's access held now
    try:
        await reconcile(op, op.export(*_key(body), dict(status), body), body, patch)
    except SpecError as exc:
        raise kopf.PermanentError(str(exc)) from None


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_TICK_SECONDS, initial_delay=RESYNC_TICK_SECONDS)
async def resync(
    body: kopf.Body, status: kopf.Status, memo: kopf.Memo, patch: kopf.Patch, **_: Any
) -> None:
    """Reconcile when due (drift repair, scheduled retries, a generation not yet reconciled)
    or when a Secret changed; only the FlowExports this replica owns."""
    op = _operator(memo)
    if op.replicas.owns(_uid(body)):
        await resync_if_due(op, op.export(*_key(body), dict(status), body), body, patch)


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
    await work(op, op.export(*_key(body), dict(status), body), body, stopped)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def cleanup(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Remove what this FlowExport created, per its deletion policy (the replica that owns it
    does; the others wait, so the finalizer goes only once the clean-up is done)."""
    op = _operator(memo)
    uid = _uid(body)
    if not op.replicas.owns(uid):
        owner = op.replicas.owner(uid)
        raise kopf.TemporaryError(f"cleaned up by replica {owner}", delay=SHARD_WAIT_SECONDS)
    await clean_up(op, body)
    _poke_access(memo)  # the finalizer goes next: the access is let go once none is left


# -- FlowExportSets: a daemon each (discovery every refreshSeconds), spec changes poke it ----


def _fleet(memo: kopf.Memo) -> Fleet:
    if "fleet" not in memo:
        memo["fleet"] = Fleet(_operator(memo))
    fleet: Fleet = memo["fleet"]
    return fleet


@kopf.daemon(GROUP, VERSION, SET_PLURAL, cancellation_timeout=5.0)
async def refresh_set(
    stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    """Discover a FlowExportSet's accounts and VPCs and keep its FlowExports in line."""
    await _fleet(memo).run(body, stopped)


@kopf.on.update(GROUP, VERSION, SET_PLURAL, field="spec")
async def set_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A FlowExportSet's spec changed: refresh it now."""
    _fleet(memo).poke(*_key(body))


@kopf.on.delete(GROUP, VERSION, SET_PLURAL)
async def set_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Delete what the FlowExportSet generated (the replica that owns it does)."""
    op = _operator(memo)
    uid = _uid(body)
    if not op.replicas.owns(uid):
        owner = op.replicas.owner(uid)
        raise kopf.TemporaryError(f"cleaned up by replica {owner}", delay=SHARD_WAIT_SECONDS)
    await _fleet(memo).clean_up(body)
    _poke_access(memo)
