"""Where the worker reads records from: everything that depends on `spec.source.mode`.

One module per mode, each a `Source` (`base.py`):

    poll.py     FilterLogEvents on the log group (no other AWS resource)
    stream.py   a subscription filter into a Kinesis stream, read shard by shard (`shards.py`)
    s3.py       flow-log objects in S3, announced on an SQS queue (no log group)

The lifecycle, the operator's worker and share reader, and `flowexport sync` go through the
functions below and never compare a mode name. Adding a mode is a module with a `Source`
subclass listed in `SOURCES`, and its settings in the spec's `SourceSpec`.
"""

from __future__ import annotations

import dataclasses
import time

from flowexport.api.models import AwsSpec, FlowExportSpec, SourceSpec, SourceStatus
from flowexport.aws.reader import ReaderCursor, initial_cursor
from flowexport.aws.session import AwsClients
from flowexport.aws.subscription import Subscription, delete_delivery, deletes, ensure_delivery
from flowexport.pipeline import Progress
from flowexport.sources.base import Reading, Share, Source, SourceStore
from flowexport.sources.poll import PollSource
from flowexport.sources.s3 import S3Source
from flowexport.sources.stream import StreamSource

__all__ = [
    "SOURCES",
    "Reading",
    "Share",
    "Source",
    "SourceStore",
    "delete_subscription",
    "ensure_subscription",
    "share_of",
    "source_for",
    "take_over",
]

#: Every mode, by its name in spec.source.mode and status.source.mode.
SOURCES: dict[str, Source] = {s.mode: s for s in (PollSource(), StreamSource(), S3Source())}


def source_for(spec: SourceSpec) -> Source:
    """The source `spec.source` names."""
    return SOURCES[spec.mode]


def ensure_subscription(
    clients: AwsClients, aws: AwsSpec, owner: str, spec: SourceSpec | None = None
) -> Subscription:
    """The flow log delivering to the log group, and the chosen mode's AWS resources; what
    this FlowExport made for another mode goes. Blocking; idempotent."""
    spec = spec or SourceSpec()
    chosen = source_for(spec)
    if chosen.reads_log_group:
        subscription = ensure_delivery(clients, aws, owner)
    else:
        subscription = Subscription.without_log_group()
    chosen.ensure(clients, aws, owner, spec, subscription)
    for source in SOURCES.values():
        if source is not chosen:
            source.release(clients, aws, owner, spec, subscription)
    return subscription


def delete_subscription(
    clients: AwsClients, aws: AwsSpec, owner: str, policy: str, spec: SourceSpec | None = None
) -> list[str]:
    """With policy Delete, remove what this FlowExport created for its mode, then its flow
    log and log group (never under managementPolicy Observe). Blocking."""
    spec = spec or SourceSpec()
    chosen = source_for(spec)
    removed = chosen.remove(clients, aws, owner, spec) if deletes(aws, policy) else []
    if not chosen.reads_log_group:
        return removed
    return removed + delete_delivery(clients, aws, owner, policy)


async def take_over(
    source: Source,
    store: SourceStore,
    progress: Progress,
    subscription: Subscription,
    start_from: str,
) -> Progress | None:
    """The log group's progress `source` goes on from, after taking over from the mode the
    stored status is in (none, itself, or another: without a gap); None when the front end
    stopped while other replicas were still reading parts.

    A cursor belongs to one log group: one of another log group (the spec names a new one) is
    never replayed; the new log group is read from `start_from`, and the store says so."""
    if source.reads_log_group:
        progress = await _own_log_group(store, progress, subscription, start_from)
    stored = store.stored()
    same = stored is not None and source.continues(stored, subscription)
    # The other replicas read parts until they see the change: let them stop first.
    others_read = stored is not None and stored.shared and not (same and store.shared)
    if others_read and not await store.others_stopped():
        return None
    if same:
        return progress
    previous = SOURCES.get(stored.mode) if stored is not None else None
    if previous is not None:
        assert stored is not None
        progress = await previous.hand_back(store, stored, progress)
    await source.begin(store, progress)
    return progress


async def _own_log_group(
    store: SourceStore, progress: Progress, subscription: Subscription, start_from: str
) -> Progress:
    cursor = progress.cursor
    arn = subscription.log_group_arn
    if not isinstance(cursor, ReaderCursor) or cursor.log_group in (None, arn):
        if isinstance(cursor, ReaderCursor) and cursor.log_group is None:
            progress.cursor = dataclasses.replace(cursor, log_group=arn)
        return progress
    progress.cursor = initial_cursor(start_from, int(time.time() * 1000), arn)
    store.announce(
        "CursorReset",
        f"the log group is now {arn} (was {cursor.log_group}): its records are read from "
        f"startFrom {start_from}; the cursor and shard checkpoints of the old one are dropped",
        warning=True,
    )
    # The log group's progress starts over; what the old source's parts had is not resumed.
    await store.switch(SourceStatus(mode=PollSource.mode), progress)
    return progress


def share_of(spec: FlowExportSpec, stored: SourceStatus | None) -> Share | None:
    """What a replica that does not hold the FlowExport reads of it (None: nothing)."""
    return source_for(spec.source).share(spec, stored)
