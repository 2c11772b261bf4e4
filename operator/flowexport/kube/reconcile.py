"""Reconcile one FlowExport: ensure its subscription, probe its PCE, report, schedule the next.

Called by the create/update/resume handlers and by the resync timer (drift repair, retries,
Secret changes). The steps are `flowexport.lifecycle`'s; this module applies their condition
updates to the status and schedules, never hot-looping: a terminal problem waits
`TERMINAL_RETRY_SECONDS` (or a Secret change), a retryable one backs off.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from flowexport import lifecycle
from flowexport.api.conditions import ConditionType
from flowexport.api.models import FlowExportSpec
from flowexport.api.validation import SpecError
from flowexport.aws.ownership import Owner
from flowexport.kube import cursor, metrics
from flowexport.kube.events import announce
from flowexport.kube.secrets import secrets_changed
from flowexport.kube.state import Export, Operator

log = logging.getLogger("flowexport.operator")


async def reconcile(
    op: Operator, export: Export, body: Any, patch: dict[str, Any] | None = None
) -> None:
    """Ensure the subscription and check the PCE. Raises SpecError for an invalid spec.
    Annotations go into kopf's `patch` of the calling handler when given."""
    metadata = body["metadata"]
    namespace, name = metadata.get("namespace") or "", metadata.get("name") or ""
    owner = Owner(namespace, name, metadata.get("uid") or "")
    async with export.lock:
        board = export.board
        generation = metadata.get("generation")
        board.generation = generation
        export.reconciled_generation = generation
        try:
            spec = op.spec_of(body)
        except SpecError as exc:
            announce(op.events, body, board.apply([lifecycle.invalid_spec(exc)]))
            export.schedule_never()
            await board.write(force=True)
            raise
        # Hundreds applied at once take turns (`RECONCILES_IN_FLIGHT`); the status write
        # below does not hold a turn.
        async with op.reconciling:
            # startFrom is resolved once, when the FlowExport is first seen, and kept in status:
            # records written while it waits (a conflict, a missing Secret) are read. A cursor
            # lost from status waits for the user's choice.
            cursor.begin(op, export, body, spec)
            read_before = dict(export.secret_versions)
            export.secret_versions.clear()
            secrets = op.secrets(namespace, spec, export.secret_versions, name)
            subscribed = await lifecycle.subscribe(spec, owner, secrets)
            announce(op.events, body, board.apply(subscribed.updates))
            for change in subscribed.changes:
                op.events.post(body, "Normal", "SubscriptionChanged", change)
            if subscribed.error is not None:
                delay = export.schedule_retry(not subscribed.error.retryable)
                metrics.count_error(
                    namespace, name, ConditionType.SUBSCRIPTION_READY, subscribed.error.reason
                )
                log.info(
                    "%s: subscription not ready (%s); retrying in %.0fs",
                    owner,
                    subscribed.error.reason,
                    delay,
                )
            else:
                subscription = subscribed.subscription
                assert subscription is not None
                previous = export.subscription
                seen = previous.other_filters if previous else {}
                for filter_name, target in sorted(subscription.other_filters.items()):
                    if filter_name not in seen:
                        op.events.post(
                            body,
                            "Warning",
                            "OtherSubscriptionFilter",
                            f"log group {spec.aws.log_group_name} also has subscription filter "
                            f"{filter_name} (to {target}): {lifecycle.OTHER_FILTER_ADVICE}",
                        )
                if (
                    subscribed.changes
                    or previous is None
                    or previous.flow_log_id != subscription.flow_log_id
                    or previous.log_format != subscription.log_format
                    or export.subscribed_generation != generation
                ):
                    export.restart.set()
                export.subscription = subscription
                export.subscribed_generation = generation
                board.update(
                    flowLogId=subscription.flow_log_id or None,
                    logGroupArn=subscription.log_group_arn or None,
                )
                probed = await lifecycle.probe(spec, secrets)
                announce(op.events, body, board.apply(probed.updates))
                expected = lifecycle.workloads_expected(spec)
                current = board.conditions.get(ConditionType.WORKLOADS_SYNCED)
                if expected.ok or current is None or current.observed_generation != generation:
                    # Mode Off is settled here; with Sync the worker reports each sync, and a new
                    # generation waits for its first one.
                    announce(op.events, body, board.apply([expected]))
                if spec.workloads.mode == "Off" and board.fields.pop("workloads", None) is not None:
                    metrics.forget_workloads(namespace, name)  # no sync keeps them true any more
                if probed.error is not None:
                    export.schedule_retry(not probed.error.retryable)
                    metrics.count_error(
                        namespace, name, ConditionType.PCE_REACHABLE, probed.error.reason
                    )
                else:
                    export.schedule_resync()
            if subscribed.error is None:
                await _hold_secret(op, export, namespace, spec)
            if read_before and export.secret_versions != read_before:
                # The worker takes the new credentials. On the first reconcile (nothing read
                # before) no pipeline has run yet: nothing to restart.
                export.restart.set()
        if await board.write(force=True):
            await cursor.mark(op, export, body, patch)


async def resync(
    op: Operator, export: Export, body: Any, patch: dict[str, Any] | None = None
) -> bool:
    """Reconcile when due (drift repair, scheduled retries), for a generation not reconciled
    yet, or when a Secret it read changed; whether it did. An invalid spec is reported and
    waits for the spec to change. Nothing while a reconcile of this FlowExport is in flight
    (the create or update handler's): it sees the same body and schedules the next itself, so
    a first reconcile slower than the timer's tick is not run twice."""
    if export.lock.locked():
        return False
    namespace = body["metadata"].get("namespace") or ""
    # What is pending, and a status someone else changed (wiped), written within a tick.
    await export.board.write()
    # A generation no reconcile here has seen: its update went to another replica's handler.
    unseen = body["metadata"].get("generation") != export.reconciled_generation
    # The user said where to resume (or the annotation is there to be removed).
    given = cursor.annotations_of(body)
    resume = cursor.RESUME_FROM in given and given[cursor.RESUME_FROM] != export.refused
    if not (export.due or unseen or resume):
        changed = await secrets_changed(op.api, export.secret_versions, namespace, op.grants)
        if changed is None:
            return False
        log.info(
            "%s/%s: Secret %s changed; reconciling",
            namespace,
            body["metadata"].get("name"),
            changed,
        )
    if export.lock.locked():
        return False  # a handler's reconcile began while this one looked (the awaits above)
    with contextlib.suppress(SpecError):
        await reconcile(op, export, body, patch)
    return True


#: The finalizer that keeps an AWS keys Secret until the clean-up of the FlowExports using it
#: has run (a prune deleting both at once would otherwise strand the clean-up).
IN_USE_FINALIZER = "flowexport.io/in-use"


def _cleanup_needs(spec: FlowExportSpec) -> str | None:
    """The Secret the clean-up will need, if any."""
    aws = spec.aws
    deletes = spec.deletion_policy == "Delete" and aws.management_policy != "Observe"
    return aws.credentials_secret_ref.name if deletes and aws.credentials_secret_ref else None


async def _hold_secret(op: Operator, export: Export, namespace: str, spec: FlowExportSpec) -> None:
    needed = _cleanup_needs(spec)
    if needed != export.held_secret and export.held_secret is not None:
        held, export.held_secret = export.held_secret, None
        await _release_if_unused(op, namespace, held)
    # Ensured on every reconcile, not only when it changes: another replica's clean-up may
    # have released a Secret this FlowExport uses too (a no-op when the finalizer is there).
    if needed is not None:
        try:
            await op.api.set_secret_finalizer(namespace, needed, IN_USE_FINALIZER, True)
        except Exception as exc:  # RBAC without patch: deletion then needs the Secret kept
            log.warning("%s: cannot hold Secret %s for the clean-up: %s", namespace, needed, exc)
            return
        export.held_secret = needed


async def release_secret(op: Operator, namespace: str, spec: FlowExportSpec) -> None:
    """After a FlowExport's clean-up: let its AWS keys Secret go, unless another still uses it."""
    needed = _cleanup_needs(spec)
    if needed is not None:
        await _release_if_unused(op, namespace, needed)


async def _release_if_unused(op: Operator, namespace: str, secret: str) -> None:
    users = [e for (ns, _), e in op.exports.items() if ns == namespace and e.held_secret == secret]
    if not users:
        await op.api.set_secret_finalizer(namespace, secret, IN_USE_FINALIZER, False)
