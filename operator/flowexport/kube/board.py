"""One writer per FlowExport for its status: conditions, counts, cursor, throttled patches."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from flowexport import metrics
from flowexport.api.conditions import ConditionUpdate
from flowexport.api.models import FlowExportStatus
from flowexport.pipeline import Progress
from flowexport.status import ConditionSet, Transition

Writer = Callable[[str, str, dict[str, Any]], Awaitable[None]]

#: Fields that move on every poll of an idle log group (the cursor follows the clock).
IDLE_FIELDS = frozenset({"cursor", "lagSeconds"})
#: Seconds between unforced writes that would change only `IDLE_FIELDS`: an idle FlowExport
#: patches its status this often, not once per poll. Nothing is lost by the wait: a restart
#: re-reads at most this much of a log group in which nothing was found.
IDLE_WRITE_SECONDS = 300.0


class StatusBoard:
    """Everything the operator knows of one FlowExport's status, written as one document.

    Handlers and the ingestion worker both report here, so neither overwrites the other's
    conditions. Writes are throttled to one per `min_interval` unless forced, and to one per
    `idle_interval` when only the cursor of an idle log group moved.
    """

    def __init__(
        self,
        namespace: str,
        name: str,
        writer: Writer,
        min_interval: float = 2.0,
        idle_interval: float = IDLE_WRITE_SECONDS,
    ) -> None:
        self.namespace, self.name = namespace, name
        self.writer = writer
        self.min_interval = min_interval
        self.idle_interval = idle_interval
        self.conditions = ConditionSet()
        self.generation: int | None = None
        self.fields: dict[str, Any] = {}
        self.progress: Progress | None = None
        #: Mode stream: each shard's status entry (checkpoint, counts, lag), by shard id.
        self.shards: dict[str, dict[str, Any]] = {}
        self._lock = asyncio.Lock()
        self._written = float("-inf")  # the first write is never throttled
        self._last: dict[str, Any] | None = None

    def load(self, status: dict[str, Any] | None) -> None:
        """Start from the status stored in the object (after an operator restart)."""
        if not status:
            return
        self._last = copy.deepcopy(status)  # what a patch must turn into the new document
        try:
            self.conditions = ConditionSet(FlowExportStatus.model_validate(status).conditions)
        except ValidationError:
            self.conditions = ConditionSet()  # written by another version: recomputed
        for key in ("flowLogId", "logGroupArn", "workloads", "source"):
            if status.get(key):
                self.fields[key] = status[key]
        if isinstance(status.get("shards"), dict):
            self.shards = copy.deepcopy(status["shards"])
        if status.get("cursor"):
            try:
                self.progress = Progress.from_state(status)
            except ValueError:
                self.progress = None
        if self.progress is not None and self.shards:
            _remove_shard_totals(self.progress, self.shards)

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
        """Set plain status fields (flowLogId, logGroupArn, workloads)."""
        self.fields.update({k: v for k, v in fields.items() if v is not None})

    def set_shard(self, shard_id: str, entry: dict[str, Any]) -> None:
        """A shard's status entry (mode stream)."""
        self.shards[shard_id] = entry

    def clear_shards(self) -> None:
        """Forget every shard entry (the mode went back to poll)."""
        self.shards = {}

    def record(self, progress: Progress) -> None:
        """The worker's latest checkpoint."""
        metrics.count_progress(self.namespace, self.name, self.progress, progress)
        self.progress = copy.deepcopy(progress)

    def document(self) -> dict[str, Any]:
        """The status as it is written."""
        doc: dict[str, Any] = {
            "conditions": [
                c.model_dump(by_alias=True, mode="json", exclude_none=True)
                for c in self.conditions.items
            ],
            **self.fields,
        }
        if self.generation is not None:
            doc["observedGeneration"] = self.generation
        if self.progress is not None:
            doc.update(self.progress.to_state())
        if self.shards:
            doc["shards"] = copy.deepcopy(self.shards)
            _add_shard_totals(doc, self.shards)
        clean: dict[str, Any] = _without_nulls(doc)
        return clean

    async def write(self, force: bool = False) -> None:
        """Patch the status if it changed since the last write and the throttle allows (or
        `force`); a throttled change stays pending for the next call."""
        async with self._lock:
            if not force and time.monotonic() - self._written < self.min_interval:
                return
            document = self.document()
            patch = merge_patch(self._last or {}, document)
            idle = patch.keys() <= IDLE_FIELDS
            if idle and not force and time.monotonic() - self._written < self.idle_interval:
                return
            if patch:
                await self.writer(self.namespace, self.name, patch)
                self._last = document
                self._written = time.monotonic()


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
