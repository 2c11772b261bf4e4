"""Shard checkpoints of a FlowExport in mode stream, kept in its status (`status.shards`).

Each shard is read by one replica (`owns`, from the replicas' Leases: see `replicas.py`),
which alone writes the shard's entry. A shard changing hands resumes from the furthest
checkpoint in status or in memory (Kinesis sequence numbers only grow within a shard), so a
late final write of the former reader never sends the new one back.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from typing import Any

from flowexport.aws.kinesis_reader import ShardCursor
from flowexport.errors import Reason
from flowexport.kube import metrics
from flowexport.kube.events import EventSink
from flowexport.kube.status_writer import StatusWriter
from flowexport.pipeline import CheckpointNotSavedError, Progress
from flowexport.sources.shards import ShardError, shard_progress

log = logging.getLogger("flowexport.operator")

#: Gap reports kept per shard.
MAX_GAPS = 3


def position(cursor: ShardCursor) -> tuple[bool, int, float]:
    """How far a shard cursor is: read to its end, else by sequence number and event offset."""
    sequence = int(cursor.sequence) if cursor.sequence and cursor.sequence.isdigit() else -1
    offset = float("inf") if cursor.offset is None else float(cursor.offset)
    return (cursor.ended, sequence, offset)


class KubeShardBook:
    """Checkpoints in the FlowExport's status board, for the shards `owns` gives this replica
    (every shard by default)."""

    def __init__(
        self,
        board: StatusWriter,
        events: EventSink,
        body: Any,
        since: int | None,
        replica: str,
        owns: Callable[[str], bool] | None = None,
        *,
        prunes: bool = True,
    ) -> None:
        self.board, self.events, self.body = board, events, body
        self.replica = replica
        self._owns = owns or (lambda _shard_id: True)
        #: Whether this book tidies status.shards (the replica holding the FlowExport).
        self.prunes = prunes
        self.since = 0
        #: Checkpoints this replica saved for this stream start.
        self.held: dict[str, Progress] = {}
        self._cache: dict[int, tuple[Any, int, Progress | None]] = {}
        if since is not None:
            self.start(since)

    def start(self, since: int) -> None:
        """Use the checkpoints of the stream start `since` (none, for a new start)."""
        self.since = since
        self.held = {}

    def _stored(self) -> list[Any]:
        status = self.body.get("status") if isinstance(self.body, Mapping) else None
        stored = status.get("shards") if isinstance(status, Mapping) else None
        return [stored if isinstance(stored, Mapping) else {}, self.board.shards]

    def progress(self, shard_id: str) -> Progress | None:
        """The shard's furthest checkpoint for this stream start: this replica's, or the one
        in status (another replica's, or this one's before a restart)."""
        found = [self.held.get(shard_id)]
        found += [self._parsed(entries.get(shard_id)) for entries in self._stored()]
        known = [p for p in found if p is not None]
        if not known:
            return None
        return max(known, key=lambda p: position(p.cursor))  # the first of equals: held

    def _parsed(self, entry: Any) -> Progress | None:
        # Looked at every second per shard: parse (window included) only entries not seen.
        if entry is None:
            return None
        cached = self._cache.get(id(entry))
        if cached is not None and cached[0] is entry and cached[1] == self.since:
            return cached[2]
        progress = shard_progress(entry, self.since)
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[id(entry)] = (entry, self.since, progress)  # the entry kept: ids stay unique
        return progress

    def owns(self, shard_id: str) -> bool:
        """Whether this replica reads the shard now; one it stops reading is released."""
        owned = self._owns(shard_id)
        if not owned and shard_id in self.board.own_shards:
            self.board.release_shard(shard_id)
            self.held.pop(shard_id, None)
        return owned

    async def save(self, shard_id: str, progress: Progress, millis_behind: int | None) -> None:
        """Record the checkpoint in status (written at once after an upload, and retried
        until written: no further upload past a checkpoint not saved)."""
        before = self.held.get(shard_id)
        self.held[shard_id] = copy.deepcopy(progress)
        entry = self._entry(shard_id)
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
        if not (uploaded or progress.cursor.ended):
            await self.board.write()
        elif not await self.board.save():  # only once stopping, with the API server away
            raise CheckpointNotSavedError

    def _entry(self, shard_id: str) -> dict[str, Any]:
        """The shard's entry to update: this replica's, or as stored now (taken over: the
        write must also clear what the stored one has and the new one lacks)."""
        if shard_id not in self.board.own_shards:
            live = self._stored()[0].get(shard_id)
            if isinstance(live, Mapping):
                self.board.shards[shard_id] = copy.deepcopy(dict(live))
        entry = self.board.shards.get(shard_id)
        if not isinstance(entry, dict) or entry.get("since") != self.since:
            return {}
        return dict(entry)

    async def lost(self, shard_id: str, message: str) -> None:
        """A Warning Event, and the message in the shard's status entry."""
        self.events.post(self.body, "Warning", "StreamRecordsLost", message)
        entry = self._entry(shard_id)
        entry["lost"] = [*(entry.get("lost") or []), message][-MAX_GAPS:]
        entry.update({"since": self.since, "replica": self.replica})
        self.board.set_shard(shard_id, entry)
        await self.board.write(force=True)

    async def failed(self, shard_id: str, error: ShardError | None) -> None:
        """Note the shard's failure in its entry (None: it reads again)."""
        entry = self._entry(shard_id)
        wanted = None if error is None else {"reason": error.reason, "message": error.message}
        if entry.get("error") == wanted:
            return
        entry.update({"error": wanted, "since": self.since, "replica": self.replica})
        self.board.set_shard(shard_id, entry)
        await self.board.write(force=True)

    def errors(self) -> dict[str, ShardError]:
        """Failures other replicas noted on the shards they read (this stream start)."""
        found = {}
        for shard_id, entry in self.board.counted_shards().items():
            error = entry.get("error")
            if shard_id in self.board.own_shards or not isinstance(error, dict):
                continue
            try:
                reason = Reason(str(error.get("reason")))
            except ValueError:
                reason = Reason.INTERNAL_ERROR
            message = f"replica {entry.get('replica')}: {error.get('message')}"
            found[shard_id] = ShardError(reason, message)
        return found

    async def listed(self, shard_ids: set[str]) -> None:
        """Tidy status.shards after a listing: entries of an older stream start go; a shard
        the stream no longer has keeps only its counts (its window and gaps go)."""
        if not self.prunes:
            return
        changed = False
        for shard_id, entry in list(self.board.shards.items()):
            if not isinstance(entry, dict) or entry.get("since") != self.since:
                self.board.drop_shard(shard_id)
                changed = True
            elif shard_id not in shard_ids and not entry.get("expired"):
                kept: dict[str, Any] = {
                    k: entry[k]
                    for k in ("cursor", "counts", "since", "lastUploadTime")
                    if k in entry
                }
                kept["replica"] = self.replica
                kept["expired"] = True
                self.board.set_shard(shard_id, kept)
                self.held.pop(shard_id, None)
                changed = True
                log.info("%s: shard %s expired from the stream", self.board.name, shard_id)
        if changed:
            await self.board.write(force=True)
