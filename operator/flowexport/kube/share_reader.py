"""The parts one replica reads of a FlowExport another replica holds (mode stream's shards).

The replica holding a FlowExport (see `replicas.py`) reconciles it, starts its source, reports
its conditions and counts, and reads its share of the source's parts. Every other replica
reads its own share: a part belongs to the live replica with the highest hash of
`<uid>/<part>` (the same rendezvous hashing and hand-over delay as FlowExports), so throughput
grows with replicas and a dead replica's parts move within the same bound. Each replica writes
only its parts' entries in status.shards. What there is to read comes from the holder's
status.source through `flowexport.sources.share_of`.

With spec.workloads.mode Sync every part stays with the holder: peer workloads are created
before each upload by its workload sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from flowexport import lifecycle
from flowexport.api.conditions import ConditionUpdate
from flowexport.api.models import SourceStatus
from flowexport.api.validation import SpecError
from flowexport.kube import metrics
from flowexport.kube.replicas import work_key
from flowexport.kube.shard_book import KubeShardBook
from flowexport.kube.source_store import WAKE_SECONDS
from flowexport.kube.state import TERMINAL_RETRY_SECONDS, Operator
from flowexport.kube.status_writer import StatusWriter
from flowexport.sources import Share, share_of

log = logging.getLogger("flowexport.operator")

#: Seconds before reading again after a retryable failure ended it.
RETRY_SECONDS = 30.0


def _share(op: Operator, body: Any) -> Share | None:
    if not op.replicas.enabled:
        return None
    try:
        spec = op.spec_of(body)
    except SpecError:
        return None
    if spec.suspend:
        return None
    stored = SourceStatus.from_stored((body.get("status") or {}).get("source"))
    return share_of(spec, stored)


async def read_share(op: Operator, body: Any, stopped: Any, uid: str) -> None:
    """Read this replica's parts of a FlowExport another replica holds, until that changes
    (the holder, the generation or the source start); returns after a short wait when there
    is nothing to read here."""
    metadata = body["metadata"]
    namespace, name = metadata.get("namespace") or "", metadata.get("name") or ""
    generation = metadata.get("generation")
    share = _share(op, body)
    if share is None:
        await stopped.wait(WAKE_SECONDS)
        return
    spec = op.spec_of(body)

    def changed() -> bool:
        return bool(
            stopped
            or op.replicas.owns(uid)
            or body["metadata"].get("generation") != generation
            or _share(op, body) != share
        )

    board = StatusWriter(namespace, name, op.api.patch_status, shards_only=True)
    board.load(dict(body.get("status") or {}))
    board.track(body)
    book = KubeShardBook(
        board,
        op.events,
        body,
        share.since,
        op.replicas.identity,
        lambda part: op.replicas.owns(work_key(uid, part)),
        prunes=False,
    )

    async def report(update: ConditionUpdate) -> None:
        # The holder reports conditions; failures here are in the part's entry and the log.
        if update.ok is False:
            metrics.count_error(namespace, name, update.type, update.reason)
            log.warning("%s/%s: %s", namespace, name, update.message)

    stop = asyncio.Event()

    async def watch() -> None:
        stopping = asyncio.ensure_future(stopped.wait())
        try:
            while not stop.is_set():
                await asyncio.wait({stopping}, timeout=WAKE_SECONDS)
                if stopped:
                    board.stopping()
                if changed():
                    stop.set()
        finally:
            stopping.cancel()

    watcher = asyncio.create_task(watch())
    try:
        result = await lifecycle.read_share(
            spec,
            share,
            op.secrets(namespace, spec, name=name),
            book,
            stop=stop,
            report=report,
            on_upload=lambda seconds: metrics.observe_upload(namespace, name, seconds),
        )
    finally:
        stop.set()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    await board.write(force=True)
    if result.error is not None:
        log.warning("%s/%s: reading shards stopped: %s", namespace, name, result.error)
        delay = RETRY_SECONDS if result.error.retryable else TERMINAL_RETRY_SECONDS
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not changed():
            await stopped.wait(WAKE_SECONDS)
