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

from flowexport import lifecycle, metrics
from flowexport.api.conditions import ConditionType
from flowexport.api.validation import SpecError, parse_spec
from flowexport.kube.events import announce
from flowexport.kube.secrets import secrets_changed
from flowexport.kube.state import Export, Operator

log = logging.getLogger("flowexport.operator")


async def reconcile(op: Operator, export: Export, body: Any) -> None:
    """Ensure the subscription and check the PCE. Raises SpecError for an invalid spec."""
    metadata = body["metadata"]
    namespace, name = metadata.get("namespace") or "", metadata.get("name") or ""
    owner = f"{namespace}/{name}"
    async with export.lock:
        board = export.board
        generation = metadata.get("generation")
        board.generation = generation
        try:
            spec = parse_spec(dict(body["spec"]))
        except SpecError as exc:
            announce(op.events, body, board.apply([lifecycle.invalid_spec(exc)]))
            export.schedule_never()
            await board.write(force=True)
            raise
        read_before = dict(export.secret_versions)
        export.secret_versions.clear()
        secrets = op.secrets(namespace, spec, export.secret_versions)
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
            board.update(flowLogId=subscription.flow_log_id, logGroupArn=subscription.log_group_arn)
            probed = await lifecycle.probe(spec, secrets)
            announce(op.events, body, board.apply(probed.updates))
            if probed.error is not None:
                export.schedule_retry(not probed.error.retryable)
                metrics.count_error(
                    namespace, name, ConditionType.PCE_REACHABLE, probed.error.reason
                )
            else:
                export.schedule_resync()
        if export.secret_versions != read_before:
            export.restart.set()  # the worker takes the new credentials
        await board.write(force=True)


async def resync(op: Operator, export: Export, body: Any) -> bool:
    """Reconcile when due (drift repair, scheduled retries) or when a Secret it read changed;
    whether it did. An invalid spec is reported and waits for the spec to change."""
    namespace = body["metadata"].get("namespace") or ""
    if not (export.due or await secrets_changed(op.api, export.secret_versions, namespace)):
        return False
    with contextlib.suppress(SpecError):
        await reconcile(op, export, body)
    return True
