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
from typing import Any, Protocol

from flowexport import lifecycle, metrics
from flowexport.api.conditions import ConditionType, ConditionUpdate
from flowexport.api.models import FlowExportSpec
from flowexport.api.validation import SpecError, parse_spec
from flowexport.aws.reader import initial_cursor
from flowexport.kube.events import announce
from flowexport.kube.state import TERMINAL_RETRY_SECONDS, Export, Operator
from flowexport.pipeline import Progress

log = logging.getLogger("flowexport.operator")

#: Seconds between checks for a new generation or a restart request while waiting.
WAKE_SECONDS = 1.0
#: Seconds before starting again after an unexpected failure (a bug) ended a pipeline.
RETRY_SECONDS = 30.0


class Stopped(Protocol):
    """What kopf hands a daemon (`kopf.DaemonStopped`): true once it must stop."""

    def __bool__(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> Awaitable[Any]: ...


async def work(op: Operator, export: Export, body: Any, stopped: Stopped) -> None:
    """Ingest until kopf stops the daemon."""
    board = export.board
    metrics.WORKERS.inc()
    try:
        while not stopped:
            export.restart.clear()  # what follows reads the newest spec and subscription
            generation = body["metadata"].get("generation")
            try:
                spec = parse_spec(dict(body["spec"]))
            except SpecError:
                # The reconcile reports it; wait for a new spec.
                await _wait(stopped, export, body, generation, float("inf"))
                continue
            if spec.suspend:
                announce(op.events, body, board.apply([lifecycle.suspended()], generation))
                await board.write(force=True)
                await _wait(stopped, export, body, generation, float("inf"))
                continue
            if export.subscription is None or export.subscribed_generation != generation:
                await stopped.wait(WAKE_SECONDS)  # the reconcile for this generation is due
                continue
            await _ingest(op, export, body, spec, generation, stopped)
    finally:
        metrics.WORKERS.dec()
        await board.write(force=True)


async def _wait(
    stopped: Stopped, export: Export, body: Any, generation: int | None, seconds: float
) -> None:
    """Wait up to `seconds`, waking early on stop, a new generation or a restart request."""
    deadline = time.monotonic() + seconds
    while not stopped and time.monotonic() < deadline:
        if export.restart.is_set() or body["metadata"].get("generation") != generation:
            return
        await stopped.wait(min(WAKE_SECONDS, deadline - time.monotonic()))


async def _ingest(
    op: Operator,
    export: Export,
    body: Any,
    spec: FlowExportSpec,
    generation: int | None,
    stopped: Stopped,
) -> None:
    """Run one pipeline until stopped, the generation changes or a restart is requested."""
    board = export.board
    subscription = export.subscription
    assert subscription is not None
    namespace, name = board.namespace, board.name
    # A copy: the pipeline mutates its progress before a checkpoint makes it true.
    progress = copy.deepcopy(board.progress) or Progress(
        initial_cursor(spec.ingestion.start_from, int(time.time() * 1000))
    )

    async def checkpoint(saved: Progress) -> None:
        # A checkpoint after an upload is written at once, so a crash repeats at most the
        # batch in flight; one that only moves the cursor over nothing may wait its turn.
        before = board.progress
        uploaded = before is None or saved.batches_uploaded != before.batches_uploaded
        board.record(saved)
        await board.write(force=uploaded)

    async def report(update: ConditionUpdate) -> None:
        if update.ok is False:
            metrics.count_error(namespace, name, ConditionType.INGESTING, update.reason)
        changes = board.apply([update], generation)
        announce(op.events, body, changes)
        # A transition (Ready turning True included) is written at once, never throttled away.
        await board.write(force=bool(changes) or update.ok is not True)

    stop = asyncio.Event()

    async def watch_for_changes() -> None:
        while not stop.is_set():
            await stopped.wait(WAKE_SECONDS)
            changed = body["metadata"].get("generation") != generation
            if stopped or changed or export.restart.is_set():
                stop.set()

    watcher = asyncio.create_task(watch_for_changes())
    # Versions are the reconcile's to track (it restarts this worker when they move).
    secrets = op.secrets(namespace, spec)
    try:
        ingested = await lifecycle.ingest(
            spec,
            subscription,
            secrets,
            progress,
            checkpoint,
            stop=stop,
            report=report,
            settle_seconds=op.settle_seconds,
            on_upload=lambda seconds: metrics.observe_upload(namespace, name, seconds),
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
        await _wait(stopped, export, body, generation, delay)
    await board.write(force=True)
    log.info("%s/%s: ingestion pipeline stopped", namespace, name)
