"""The ingestion worker of one FlowExport (the body of its kopf daemon).

It runs `lifecycle.ingest` with the subscription the last reconcile ensured, and starts it
again when the spec's generation moves or a reconcile changed the subscription or read changed
Secrets. The cursor lives in status: written after each accepted batch (throttled) and
whenever a pipeline stops, and read back after an operator restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Awaitable
from typing import Any, Literal, Protocol

from flowexport import lifecycle
from flowexport.api.conditions import ConditionUpdate
from flowexport.api.models import FlowExportSpec
from flowexport.api.validation import SpecError
from flowexport.aws.reader import initial_cursor
from flowexport.kube import metrics
from flowexport.kube.events import announce
from flowexport.kube.replicas import uid_of, work_key
from flowexport.kube.share_reader import read_share
from flowexport.kube.source_store import WAKE_SECONDS, KubeSourceStore
from flowexport.kube.state import TERMINAL_RETRY_SECONDS, Export, Operator
from flowexport.pipeline import CheckpointNotSavedError, Progress
from flowexport.workloads.sync import SyncResult, WorkloadTotals

log = logging.getLogger("flowexport.operator")

#: Seconds before starting again after an unexpected failure (a bug) ended a pipeline.
RETRY_SECONDS = 30.0


class Stopped(Protocol):
    """What kopf hands a daemon (`kopf.DaemonStopped`): true once it must stop."""

    def __bool__(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> Awaitable[Any]: ...


async def work(op: Operator, export: Export, body: Any, stopped: Stopped) -> None:
    """Ingest until kopf stops the daemon, while this replica owns the FlowExport (see
    `replicas`): one that moves to another replica is let go (its state dropped), and taken up
    again from its stored status if it comes back."""
    metadata = body["metadata"]
    namespace, name = metadata.get("namespace") or "", metadata.get("name") or ""
    uid = uid_of(metadata)
    metrics.WORKERS.inc()
    op.working.add((namespace, name))
    held = False
    try:
        while not stopped:
            if not op.replicas.owns(uid):
                if held:
                    log.info("%s/%s: let go by replica %s", namespace, name, op.replicas.identity)
                    held = False
                op.let_go(namespace, name)
                # This replica's share of the source's parts (a short wait if none).
                await read_share(op, body, stopped, uid)
                continue
            if not held and op.replicas.enabled:
                log.info("%s/%s: taken up by replica %s", namespace, name, op.replicas.identity)
            held = True
            export = op.export(namespace, name, dict(body.get("status") or {}), body)
            await _step(op, export, body, stopped, uid)
    finally:
        metrics.WORKERS.dec()
        if stopped:
            export.board.stopping()  # a hung API server must not hold up the stop
        try:
            if op.replicas.owns(uid):
                await export.board.write(force=True)
        finally:
            op.working.discard((namespace, name))


async def _step(op: Operator, export: Export, body: Any, stopped: Stopped, uid: str) -> None:
    """One turn of an owned FlowExport's worker: wait for what it needs, or ingest."""
    board = export.board
    export.restart.clear()  # what follows reads the newest spec and subscription
    generation = body["metadata"].get("generation")
    try:
        spec = op.spec_of(body)
    except SpecError:
        # The reconcile reports it; wait for a new spec.
        await _wait(op, stopped, export, body, generation, float("inf"))
        return
    if spec.suspend:
        updates = [lifecycle.suspended()]
        if spec.workloads.mode == "Sync":
            updates.append(lifecycle.workloads_suspended())
        announce(op.events, body, board.apply(updates, generation))
        await board.write(force=True)
        await _wait(op, stopped, export, body, generation, float("inf"))
        return
    if (
        export.subscription is None
        or export.subscribed_generation != generation
        or board.progress is None  # the cursor was lost: the reconcile asks where to resume
    ):
        await stopped.wait(WAKE_SECONDS)  # the reconcile for this generation is due
        return
    await _ingest(op, export, body, spec, generation, stopped, uid)


async def _wait(
    op: Operator,
    stopped: Stopped,
    export: Export,
    body: Any,
    generation: int | None,
    seconds: float,
) -> None:
    """Wait up to `seconds`, waking early on stop, a new generation, a restart request or
    the FlowExport moving to another replica."""
    uid = uid_of(body["metadata"])
    deadline = time.monotonic() + seconds
    while not stopped and time.monotonic() < deadline:
        if export.restart.is_set() or body["metadata"].get("generation") != generation:
            return
        if not op.replicas.owns(uid):
            return
        await stopped.wait(min(WAKE_SECONDS, deadline - time.monotonic()))


async def _ingest(
    op: Operator,
    export: Export,
    body: Any,
    spec: FlowExportSpec,
    generation: int | None,
    stopped: Stopped,
    uid: str,
) -> None:
    """Run one pipeline until stopped, the generation changes, a restart is requested or the
    FlowExport moves to another replica."""
    board = export.board
    subscription = export.subscription
    assert subscription is not None
    namespace, name = board.namespace, board.name
    # A copy: the pipeline mutates its progress before a checkpoint makes it true.
    progress = copy.deepcopy(board.progress) or Progress(
        initial_cursor(spec.ingestion.start_from, int(time.time() * 1000))
    )
    # Peer workloads are synced before each upload by this replica: no sharing with Sync.
    shared = op.replicas.enabled and spec.workloads.mode != "Sync"
    store = KubeSourceStore(
        board,
        op.events,
        body,
        op.replicas.identity,
        stopped,
        (lambda part: op.replicas.owns(work_key(uid, part))) if shared else None,
    )

    async def checkpoint(saved: Progress) -> None:
        # A checkpoint after an upload is written at once, and retried until it is (no
        # further upload meanwhile), so a crash repeats at most the batch in flight; one that
        # only moves the cursor over nothing may wait its turn.
        before = board.progress
        uploaded = before is None or saved.batches_uploaded != before.batches_uploaded
        board.record(saved)
        if not uploaded:
            await board.write()
        elif not await board.save():  # only once stopping, with the API server away
            raise CheckpointNotSavedError

    async def report(update: ConditionUpdate) -> None:
        if update.ok is False:
            metrics.count_error(namespace, name, update.type, update.reason)
        changes = board.apply([update], generation)
        announce(op.events, body, changes)
        # A transition (Ready turning True included) is written at once, never throttled away.
        await board.write(force=bool(changes) or update.ok is not True)

    # The workload syncs' totals since creation, from the stored status (used in mode Sync).
    totals = WorkloadTotals.from_status(board.fields.get("workloads"))

    async def on_workloads(result: SyncResult) -> None:
        board.update(workloads=totals.to_status())
        metrics.count_workloads(
            namespace,
            name,
            result.managed,
            created=result.created,
            updated=result.updated,
            deleted=result.deleted,
            failed=result.failed,
        )
        if result.changes or result.failed:
            kind: Literal["Normal", "Warning"] = "Warning" if result.failed else "Normal"
            op.events.post(body, kind, "WorkloadsChanged", result.summary())
        await board.write(force=bool(result.changes or result.failed))

    stop = asyncio.Event()

    async def watch_for_changes() -> None:
        # One wait for kopf's stop, not one `stopped.wait(timeout)` per second: at 100
        # FlowExports those (a task and a timeout each) were a third of an idle operator's CPU.
        stopping = asyncio.ensure_future(stopped.wait())
        counted = True  # the other replicas' shard entries are in status.counts
        try:
            while not stop.is_set():
                await asyncio.wait({stopping}, timeout=WAKE_SECONDS)
                changed = body["metadata"].get("generation") != generation
                if stopped:
                    board.stopping()
                if stopped or changed or export.restart.is_set() or not op.replicas.owns(uid):
                    stop.set()
                else:
                    shards = (body.get("status") or {}).get("shards")
                    if store.shard_book is None and shards:
                        # A source without parts: a late final checkpoint of another
                        # replica's shard.
                        for shard_id in list(shards):
                            board.drop_shard(shard_id)
                        counted = False
                    elif store.shard_book is not None:
                        counted = not board.observe_shards(shards) and counted
                    counted = counted or await board.write()
        finally:
            stopping.cancel()

    watcher = asyncio.create_task(watch_for_changes())
    # Versions are the reconcile's to track (it restarts this worker when they move).
    secrets = op.secrets(namespace, spec, name=name)
    try:
        ingested = await lifecycle.ingest(
            lifecycle.Ingestion(
                spec,
                subscription,
                secrets,
                progress,
                checkpoint,
                store,
                stop,
                report,
                settle_seconds=op.settle_seconds,
                owner=f"{namespace}/{name}",
                on_upload=lambda seconds: metrics.observe_upload(namespace, name, seconds),
                workload_totals=totals,
                on_workloads=on_workloads,
            )
        )
    finally:
        stop.set()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    if ingested.progress is not None:
        board.record(ingested.progress)
    if ingested.error is not None:
        # Terminal for the settings as they are: a reconcile may repair it (a log group
        # deleted out of band is recreated), else a spec or Secret change will.
        export.request_reconcile()
        await report(ingested.updates[0])
        delay = RETRY_SECONDS if ingested.error.retryable else TERMINAL_RETRY_SECONDS
        await _wait(op, stopped, export, body, generation, delay)
    await board.write(force=True)
    log.info("%s/%s: ingestion pipeline stopped", namespace, name)
