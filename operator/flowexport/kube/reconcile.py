"""Reconcile one FlowExport: ensure its subscription, probe its PCE, report, schedule the next.

Called by the create/update/resume handlers and by the resync timer (drift repair, retries,
Secret changes). Failures are reported as conditions and scheduled here, never hot-looped:
a terminal problem waits `TERMINAL_RETRY_SECONDS` (or a Secret change), a transient one
backs off.
"""

from __future__ import annotations

import asyncio
import logging

import kopf

from flowexport import metrics
from flowexport.api.models import FlowExportSpec
from flowexport.api.validation import SpecError, parse_spec
from flowexport.aws.errors import AwsError
from flowexport.aws.session import make_clients
from flowexport.aws.subscription import Subscription, ensure_subscription
from flowexport.kube.events import announce, note
from flowexport.kube.secrets import ConfigProblem, aws_target, pce_client
from flowexport.kube.state import Export, Operator
from flowexport.pce.errors import PCEError

log = logging.getLogger("flowexport.operator")


async def reconcile(op: Operator, export: Export, body: kopf.Body) -> None:
    """Ensure the subscription and check the PCE. Raises SpecError for an invalid spec."""
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    async with export.lock:
        board = export.board
        generation = body.metadata.get("generation")
        board.generation = generation
        try:
            spec = parse_spec(dict(body.spec))
        except SpecError as exc:
            announce(
                body,
                board.condition("SubscriptionReady", False, "InvalidSpec", str(exc), generation),
            )
            export.schedule_never()
            await board.write(force=True)
            raise
        read_before = dict(export.secret_versions)
        export.secret_versions.clear()
        subscription = await _subscribe(op, export, body, spec, f"{namespace}/{name}")
        if subscription is not None:
            await _probe(op, export, body, spec)
        if export.secret_versions != read_before:
            export.restart.set()  # the worker takes the new credentials
        await board.write(force=True)


async def _subscribe(
    op: Operator, export: Export, body: kopf.Body, spec: FlowExportSpec, owner: str
) -> Subscription | None:
    board = export.board
    generation = board.generation
    namespace = body.metadata.namespace or ""
    try:
        target = await aws_target(op.api, export.secret_versions, namespace, spec)
        subscription = await asyncio.to_thread(
            ensure_subscription, make_clients(target), spec.aws, owner
        )
    except (ConfigProblem, AwsError) as exc:
        terminal = getattr(exc, "terminal", True)
        delay = export.schedule_retry(terminal)
        metrics.count_error(namespace, board.name, "SubscriptionReady", exc.reason)
        announce(
            body, board.condition("SubscriptionReady", False, exc.reason, str(exc), generation)
        )
        log.info("%s: subscription not ready (%s); retrying in %.0fs", owner, exc.reason, delay)
        return None
    for change in subscription.changes:
        note(body, "SubscriptionChanged", change)
    previous = export.subscription
    if (
        subscription.changes
        or previous is None
        or previous.flow_log_id != subscription.flow_log_id
        or previous.log_format != subscription.log_format
        or export.subscribed_generation != generation
    ):
        export.restart.set()
    export.subscription = subscription
    export.subscribed_generation = generation
    board.update(flowLogId=subscription.flow_log_id, logGroupArn=subscription.log_group_arn)
    if subscription.delivery_error:
        changes = board.condition(
            "SubscriptionReady", False, "DeliveryFailed", subscription.delivery_error, generation
        )
    else:
        how = "created by" if subscription.flow_log_owned else "adopted by"
        message = f"flow log {subscription.flow_log_id} {how} this FlowExport"
        changes = board.condition("SubscriptionReady", True, "Subscribed", message, generation)
    announce(body, changes)
    return subscription


async def _probe(op: Operator, export: Export, body: kopf.Body, spec: FlowExportSpec) -> None:
    board = export.board
    generation = board.generation
    try:
        async with await pce_client(
            op.api, export.secret_versions, body.metadata.namespace or "", spec
        ) as pce:
            await pce.probe()
    except (ConfigProblem, PCEError) as exc:
        export.schedule_retry(not getattr(exc, "retryable", False))
        metrics.count_error(board.namespace, board.name, "PCEReachable", exc.reason)
        announce(body, board.condition("PCEReachable", False, exc.reason, str(exc), generation))
        return
    export.schedule_resync()
    message = f"{spec.pce.url} org {spec.pce.org_id}"
    announce(body, board.condition("PCEReachable", True, "Reachable", message, generation))
