"""The ingestion worker of one FlowExport (the body of its kopf daemon).

It runs the pipeline with the subscription the last reconcile ensured, and starts a new
pipeline when the spec's generation moves or a reconcile changed the subscription or read
changed Secrets. The cursor lives in status: written after each accepted batch (throttled)
and whenever a pipeline stops, and read back after an operator restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time

import kopf

from flowexport import metrics
from flowexport.api.models import FlowExportSpec
from flowexport.api.validation import SpecError, parse_spec
from flowexport.aws.errors import AwsError
from flowexport.aws.reader import initial_cursor
from flowexport.aws.session import make_clients
from flowexport.kube.events import announce
from flowexport.kube.secrets import ConfigProblem, aws_target, pce_client
from flowexport.kube.state import TERMINAL_RETRY_SECONDS, Export, Operator
from flowexport.pce.errors import PCEError
from flowexport.pipeline import Progress, build_pipeline

log = logging.getLogger("flowexport.operator")

#: Seconds between checks for a new generation or a restart request while waiting.
WAKE_SECONDS = 1.0


async def work(op: Operator, export: Export, body: kopf.Body, stopped: kopf.DaemonStopped) -> None:
    """Ingest until kopf stops the daemon."""
    board = export.board
    metrics.WORKERS.inc()
    try:
        while not stopped:
            export.restart.clear()  # what follows reads the newest spec and subscription
            generation = body.metadata.get("generation")
            try:
                spec = parse_spec(dict(body.spec))
            except SpecError:
                # The reconcile reports it; wait for a new spec.
                await _wait(stopped, export, body, generation, float("inf"))
                continue
            if spec.suspend:
                changes = board.condition(
                    "Ingesting", False, "Suspended", "spec.suspend is true", generation
                )
                announce(body, changes)
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
    stopped: kopf.DaemonStopped,
    export: Export,
    body: kopf.Body,
    generation: int | None,
    seconds: float,
) -> None:
    """Wait up to `seconds`, waking early on stop, a new generation or a restart request."""
    deadline = time.monotonic() + seconds
    while not stopped and time.monotonic() < deadline:
        if export.restart.is_set() or body.metadata.get("generation") != generation:
            return
        await stopped.wait(min(WAKE_SECONDS, deadline - time.monotonic()))


async def _ingest(
    op: Operator,
    export: Export,
    body: kopf.Body,
    spec: FlowExportSpec,
    generation: int | None,
    stopped: kopf.DaemonStopped,
) -> None:
    """Run one pipeline until stopped, the generation changes or a restart is requested."""
    board = export.board
    subscription = export.subscription
    assert subscription is not None
    namespace = body.metadata.namespace or ""
    try:
        # Versions are the reconcile's to track (it restarts this worker when they move).
        read: dict[str, str] = {}
        clients = make_clients(await aws_target(op.api, read, namespace, spec))
        pce = await pce_client(op.api, read, namespace, spec)
    except ConfigProblem as exc:
        metrics.count_error(namespace, board.name, "Ingesting", exc.reason)
        announce(body, board.condition("Ingesting", False, exc.reason, str(exc), generation))
        await board.write(force=True)
        await _wait(stopped, export, body, generation, TERMINAL_RETRY_SECONDS)
        return
    ingestion = spec.ingestion
    # A copy: the pipeline mutates its progress before a checkpoint makes it true.
    progress = copy.deepcopy(board.progress) or Progress(
        initial_cursor(ingestion.start_from, int(time.time() * 1000))
    )

    async def checkpoint(saved: Progress) -> None:
        board.record(saved)
        await board.write()

    pipeline = build_pipeline(
        spec,
        clients,
        subscription.log_format,
        pce,
        progress,
        checkpoint,
        settle_seconds=op.settle_seconds,
        on_upload=lambda seconds: metrics.observe_upload(namespace, board.name, seconds),
    )
    stop = asyncio.Event()

    async def watch_for_changes() -> None:
        while not stop.is_set():
            await stopped.wait(WAKE_SECONDS)
            if stopped or body.metadata.get("generation") != generation or export.restart.is_set():
                stop.set()

    async def healthy() -> None:
        message = "caught up with the log group"
        announce(body, board.condition("Ingesting", True, "Ingesting", message, generation))
        board.record(pipeline.progress)
        await board.write()

    async def failing(exc: Exception) -> None:
        reason = getattr(exc, "reason", "IngestionFailed")
        metrics.count_error(namespace, board.name, "Ingesting", reason)
        message = f"retrying: {exc}"
        announce(body, board.condition("Ingesting", False, reason, message, generation))
        await board.write(force=True)

    watcher = asyncio.create_task(watch_for_changes())
    try:
        async with pce:
            await pipeline.run_forever(
                stop, float(ingestion.poll_interval_seconds), failing, healthy
            )
    except (AwsError, PCEError) as exc:
        # Terminal for the settings as they are: a reconcile may repair it (a log group
        # deleted out of band is recreated), else a spec or Secret change will.
        export.request_reconcile()
        metrics.count_error(namespace, board.name, "Ingesting", exc.reason)
        announce(body, board.condition("Ingesting", False, exc.reason, str(exc), generation))
        await board.write(force=True)
        await _wait(stopped, export, body, generation, TERMINAL_RETRY_SECONDS)
    finally:
        stop.set()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        board.record(pipeline.progress)
        await board.write(force=True)
        log.info("%s/%s: ingestion pipeline stopped", namespace, body.metadata.name)
