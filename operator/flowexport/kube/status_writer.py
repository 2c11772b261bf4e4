"""One writer per FlowExport for its status: conditions, counts, cursor, throttled patches."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from flowexport.api.conditions import ConditionSet, ConditionUpdate, Transition
from flowexport.api.models import FlowExportStatus, SourceStatus
from flowexport.kube import metrics
from flowexport.pipeline import Progress

Writer = Callable[[str, str, dict[str, Any]], Awaitable[None]]

#: Fields that move on every poll of an idle log group (the cursor follows the clock).
IDLE_FIELDS = frozenset({"cursor", "lagSeconds"})
#: Seconds between unforced writes that would change only `IDLE_FIELDS`: an idle FlowExport
#: patches its status this often, not once per poll. Nothing is lost by the wait: a restart
#: re-reads at most this much of a log group in which nothing was found.
IDLE_WRITE_SECONDS = 300.0


class StatusWriter:
    """Everything the operator knows of one FlowExport's status, written as one document.

    Handlers and the ingestion worker both report here, so neither overwrites the other's
    conditions. Writes are throttled to one per `min_interval` unless forced, and to one per
    `idle_interval` when only the cursor of an idle log group moved.

    Mode stream: `status.shards` is written per key, each by the replica reading the shard
    (`set_shard`); this board never writes another replica's entry, but counts every entry of
    the current stream start into status.counts. A `shards_only` board (a replica reading
    shards of a FlowExport another replica holds) writes its own shard entries and nothing else.
    """

    def __init__(
        self,
        namespace: str,
        name: str,
        writer: Writer,
        min_interval: float = 2.0,
        idle_interval: float = IDLE_WRITE_SECONDS,
        shards_only: bool = False,
    ) -> None:
        self.namespace, self.name = namespace, name
        self.writer = writer
        self.min_interval = min_interval
        self.idle_interval = idle_interval
        self.conditions = ConditionSet()
        self.generation: int | None = None
        self.fields: dict[str, Any] = {}
        self.progress: Progress | None = None
        #: status.source: the read mode and its start (see `flowexport.sources`).
        self.source: SourceStatus | None = None
        self.shards_only = shards_only
        #: Mode stream: each shard's status entry (checkpoint, counts, lag), by shard id:
        #: those this replica writes (`own_shards`) and the others' as last observed.
        self.shards: dict[str, dict[str, Any]] = {}
        self.own_shards: set[str] = set()
        #: Shard entries to delete with the next write (None: every entry).
        self._drop_shards: set[str] | None = set()
        #: This replica's shard entries as last written.
        self._last_shards: dict[str, dict[str, Any]] = {}
        self._lock = asyncio.Lock()
        self._written = float("-inf")  # the first write is never throttled
        self._last: dict[str, Any] | None = None

    def load(self, status: dict[str, Any] | None) -> None:
        """Start from the status stored in the object (after an operator restart)."""
        if not status:
            return
        # What a patch must turn into the new document (shard entries are written per key;
        # a shards-only board writes nothing else).
        if not self.shards_only:
            self._last = {k: copy.deepcopy(v) for k, v in status.items() if k != "shards"}
        try:
            self.conditions = ConditionSet(FlowExportStatus.model_validate(status).conditions)
        except ValidationError:
            self.conditions = ConditionSet()  # written by another version: recomputed
        for key in ("flowLogId", "logGroupArn", "workloads"):
            if status.get(key):
                self.fields[key] = status[key]
        self.source = SourceStatus.from_stored(status.get("source"))
        if isinstance(status.get("shards"), dict):
            self.shards = copy.deepcopy(status["shards"])
        if status.get("cursor"):
            try:
                self.progress = Progress.from_state(status)
            except ValueError:
                self.progress = None
        if self.progress is not None and self.shards:
            own = self.source.log_group_counts if self.source is not None else None
            if own is not None:
                self.progress.set_counts(own.model_dump(by_alias=True))
            else:  # written before logGroupCounts existed
                _remove_shard_totals(self.progress, self.counted_shards())

    def apply(
        self, updates: list[ConditionUpdate], generation: int | None = None
    ) -> list[Transition]:
        """Apply condition updates (and Ready) decided for `generation` (default: the last
        reconciled); returns the conditions whose status changed."""
        changed = self.conditions.apply(
            updates, self.generation if generation is None else generation
        )
        for c in self.conditions.items:
            metrics.set_condition(self.namespace, self.name, c.type, c.status == "True")
        return changed

    def update(self, **fields: Any) -> None:
        """Set plain status fields (flowLogId, logGroupArn, workloads); `source` has its own
        attribute."""
        self.fields.update({k: v for k, v in fields.items() if v is not None})

    def set_shard(self, shard_id: str, entry: dict[str, Any]) -> None:
        """A shard's status entry (mode stream), written by this replica."""
        if shard_id not in self.own_shards and isinstance(self.shards.get(shard_id), dict):
            # Taken over: the patch must also clear what the stored entry has and this lacks.
            self._last_shards[shard_id] = _without_nulls(self.shards[shard_id])
        self.shards[shard_id] = entry
        self.own_shards.add(shard_id)
        if self._drop_shards is not None:
            self._drop_shards.discard(shard_id)

    def release_shard(self, shard_id: str) -> None:
        """Stop writing the shard's entry (another replica reads the shard now); the entry
        stays in status."""
        self.own_shards.discard(shard_id)
        self._last_shards.pop(shard_id, None)

    def drop_shard(self, shard_id: str) -> None:
        """Delete the shard's entry from status with the next write."""
        self.release_shard(shard_id)
        self.shards.pop(shard_id, None)
        if self._drop_shards is not None:
            self._drop_shards.add(shard_id)

    def observe_shards(self, stored: Any) -> bool:
        """Take the other replicas' shard entries from the stored status; returns whether
        any changed."""
        stored = stored if isinstance(stored, dict) else {}
        changed = False
        for shard_id in [k for k in self.shards if k not in self.own_shards]:
            if shard_id not in stored:
                del self.shards[shard_id]
                changed = True
        for shard_id, entry in stored.items():
            if shard_id in self.own_shards or not isinstance(entry, dict):
                continue
            if self.shards.get(shard_id) != entry:
                self.shards[shard_id] = copy.deepcopy(entry)
                changed = True
        return changed

    def clear_shards(self) -> None:
        """Forget every shard entry, and delete them all from status with the next write
        (the mode went back to poll, or a new stream start)."""
        self.shards = {}
        self.own_shards = set()
        self._drop_shards = None

    def counted_shards(self) -> dict[str, dict[str, Any]]:
        """The shard entries status.counts includes: those of the current source start (none
        while the source has no start: polling)."""
        if self.source is None:
            return self.shards  # written before status.source existed
        since = self.source.since
        if since is None:
            return {}
        return {k: e for k, e in self.shards.items() if e.get("since") == since}

    def record(self, progress: Progress) -> None:
        """The worker's latest checkpoint."""
        metrics.count_progress(self.namespace, self.name, self.progress, progress)
        self.progress = copy.deepcopy(progress)

    def document(self) -> dict[str, Any]:
        """The status as this replica writes it (its own shard entries apart: `own_entries`)."""
        if self.shards_only:
            return {}
        doc: dict[str, Any] = {
            "conditions": [
                c.model_dump(by_alias=True, mode="json", exclude_none=True)
                for c in self.conditions.items
            ],
            **self.fields,
        }
        if self.source is not None:
            doc["source"] = self.source.to_stored()
        if self.generation is not None:
            doc["observedGeneration"] = self.generation
        if self.progress is not None:
            doc.update(self.progress.to_state())
        counted = self.counted_shards()
        if counted:
            if isinstance(doc.get("source"), dict) and "counts" in doc:
                # The log group's own part, kept apart: the shards' entries move on their own.
                doc["source"] = {**doc["source"], "logGroupCounts": copy.deepcopy(doc["counts"])}
            _add_shard_totals(doc, counted)
        clean: dict[str, Any] = _without_nulls(doc)
        return clean

    def own_entries(self) -> dict[str, dict[str, Any]]:
        """The shard entries this replica writes, as written."""
        return {k: _without_nulls(self.shards[k]) for k in sorted(self.own_shards)}

    async def write(self, force: bool = False) -> bool:
        """Patch the status if it changed since the last write and the throttle allows (or
        `force`); a throttled change stays pending for the next call. Returns whether nothing
        is pending."""
        async with self._lock:
            if not force and time.monotonic() - self._written < self.min_interval:
                return False
            if self._drop_shards is None:
                # Every entry goes, other replicas' too (a new stream start or mode poll).
                await self.writer(self.namespace, self.name, {"shards": None})
                self._drop_shards, self._last_shards = set(), {}
            document, entries = self.document(), self.own_entries()
            patch = merge_patch(self._last or {}, document)
            # Per key: never null an entry this replica does not write.
            shard_patch: dict[str, Any] = dict.fromkeys(self._drop_shards)
            for shard_id, entry in entries.items():
                changed = merge_patch(self._last_shards.get(shard_id) or {}, entry)
                if changed:
                    shard_patch[shard_id] = changed
            if shard_patch:
                patch["shards"] = shard_patch
            idle = patch.keys() <= IDLE_FIELDS
            if idle and not force and time.monotonic() - self._written < self.idle_interval:
                return False
            if patch:
                await self.writer(self.namespace, self.name, patch)
                self._last, self._last_shards = document, entries
                self._drop_shards = set()
                self._written = time.monotonic()
            return True


def merge_patch(stored: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns `stored` into `wanted`: changed fields, and
    null for each field `wanted` no longer has, at any depth. A field the patch left out would
    survive from an older write (e.g. a cursor's page token after its slice closed)."""
    patch: dict[str, Any] = {key: None for key in stored if key not in wanted}
    for key, value in wanted.items():
        old = stored.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            nested = merge_patch(old, value)
            if nested:
                patch[key] = nested
        elif key not in stored or old != value:
            patch[key] = value
    return patch


def _remove_shard_totals(progress: Progress, shards: dict[str, dict[str, Any]]) -> None:
    """The log group's own counts from status.counts, which also holds the shards' (see
    `_add_shard_totals`)."""
    for entry in shards.values():
        counts = entry.get("counts") or {}
        progress.records_read -= int(counts.get("recordsRead") or 0)
        progress.flows_uploaded -= int(counts.get("flowsUploaded") or 0)
        progress.flows_failed -= int(counts.get("flowsFailed") or 0)
        progress.batches_uploaded -= int(counts.get("batchesUploaded") or 0)
        for reason, count in (counts.get("recordsSkipped") or {}).items():
            left = progress.records_skipped.get(reason, 0) - int(count)
            if left > 0:
                progress.records_skipped[reason] = left
            else:
                progress.records_skipped.pop(reason, None)
    progress.records_read = max(0, progress.records_read)
    progress.flows_uploaded = max(0, progress.flows_uploaded)
    progress.flows_failed = max(0, progress.flows_failed)
    progress.batches_uploaded = max(0, progress.batches_uploaded)


def _add_shard_totals(doc: dict[str, Any], shards: dict[str, dict[str, Any]]) -> None:
    """status.counts, lastUploadTime and lagSeconds over the log group's reads (before mode
    stream) and every shard's."""
    counts = doc.setdefault("counts", {})
    skipped = dict(counts.get("recordsSkipped") or {})
    last = doc.get("lastUploadTime")
    behind: list[int] = []
    for entry in shards.values():
        shard_counts = entry.get("counts") or {}
        for key in ("recordsRead", "flowsUploaded", "flowsFailed", "batchesUploaded"):
            counts[key] = int(counts.get(key) or 0) + int(shard_counts.get(key) or 0)
        for reason, count in (shard_counts.get("recordsSkipped") or {}).items():
            skipped[reason] = skipped.get(reason, 0) + int(count)
        if entry.get("lastUploadTime") and (last is None or entry["lastUploadTime"] > last):
            last = entry["lastUploadTime"]
        if entry.get("millisBehindLatest") is not None and not (entry.get("cursor") or {}).get(
            "ended"
        ):
            behind.append(int(entry["millisBehindLatest"]))
    counts["recordsSkipped"] = dict(sorted(skipped.items()))
    doc["lastUploadTime"] = last
    if behind:
        doc["lagSeconds"] = max(behind) // 1000


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value
