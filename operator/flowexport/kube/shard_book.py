"""Shard checkpoints of a FlowExport in mode stream, kept in its status (`status.shards`)."""

from __future__ import annotations

import copy
import logging
from typing import Any

from flowexport import metrics
from flowexport.kube.board import StatusBoard
from flowexport.kube.events import EventSink
from flowexport.pipeline import Progress
from flowexport.streaming import shard_progress

log = logging.getLogger("flowexport.operator")

#: Gap reports kept per shard.
MAX_GAPS = 3


class KubeShardBook:
    """Checkpoints in the FlowExport's status board; every shard is this replica's (the one
    holding the FlowExport)."""

    def __init__(
        self,
        board: StatusBoard,
        events: EventSink,
        body: Any,
        since: int | None,
        replica: str,
    ) -> None:
        self.board, self.events, self.body = board, events, body
        self.replica = replica
        self.since = 0
        self.shards: dict[str, Progress] = {}
        if since is not None:
            self.start(since)

    def start(self, since: int) -> None:
        """Use the checkpoints of the stream start `since` (none, for a new start)."""
        self.since = since
        self.shards = {}
        for shard_id, entry in self.board.shards.items():
            progress = shard_progress(entry, since)
            if progress is not None:
                self.shards[shard_id] = progress

    def progress(self, shard_id: str) -> Progress | None:
        """The shard's last checkpoint for this stream start."""
        return self.shards.get(shard_id)

    def owns(self, shard_id: str) -> bool:
        """Every shard: the replica holding the FlowExport reads them all."""
        return True

    async def save(self, shard_id: str, progress: Progress, millis_behind: int | None) -> None:
        """Record the checkpoint in status (written at once after an upload)."""
        before = self.shards.get(shard_id)
        self.shards[shard_id] = copy.deepcopy(progress)
        entry = dict(self.board.shards.get(shard_id) or {})
        entry.update(progress.to_state())
        entry.update(
            {"since": self.since, "millisBehindLatest": millis_behind, "replica": self.replica}
        )
        self.board.set_shard(shard_id, entry)
        ns, name = self.board.namespace, self.board.name
        metrics.count_progress(ns, name, before, progress)
        if millis_behind is not None:
            metrics.set_shard_lag(ns, name, shard_id, millis_behind / 1000)
        uploaded = before is None or progress.batches_uploaded != before.batches_uploaded
        await self.board.write(force=uploaded or progress.cursor.ended)

    async def lost(self, shard_id: str, message: str) -> None:
        """A Warning Event, and the message in the shard's status entry."""
        self.events.post(self.body, "Warning", "StreamRecordsLost", message)
        entry = dict(self.board.shards.get(shard_id) or {})
        entry["lost"] = [*(entry.get("lost") or []), message][-MAX_GAPS:]
        self.board.set_shard(shard_id, entry)
        await self.board.write(force=True)
