"""The delete handler's body: wait for the worker to stop, remove what the FlowExport created
(per `deletionPolicy`, unless the skip-cleanup annotation is set), say why in a condition and an
Event when it cannot, and release the AWS keys Secret."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import kopf

from flowexport import lifecycle
from flowexport.api.conditions import ConditionType, ConditionUpdate
from flowexport.api.validation import SpecError
from flowexport.aws.ownership import Owner
from flowexport.errors import FlowExportError
from flowexport.kube.reconcile import release_secret
from flowexport.kube.replicas import uid_of
from flowexport.kube.state import Operator

#: Seconds before retrying a failed clean-up.
CLEANUP_RETRY_SECONDS = 30.0

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


async def clean_up(op: Operator, body: Any) -> None:
    """The delete handler's body: raises kopf.TemporaryError to be retried, after saying why
    in a condition and an Event."""
    metadata = body["metadata"]
    namespace, name = metadata.get("namespace") or "", metadata.get("name") or ""
    uid = uid_of(metadata)
    if uid in op.cleaned_up:
        return  # kopf runs the deletion again when a daemon stops late: done already
    try:
        spec = op.spec_of(body)
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
            owner = Owner(namespace, name, metadata.get("uid") or "")
            done = await lifecycle.clean_up(spec, owner, op.secrets(namespace, spec, name=name))
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
