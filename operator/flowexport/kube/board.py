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
        for key in ("flowLogId", "logGroupArn", "workloads"):
            if status.get(key):
                self.fields[key] = status[key]
        if status.get("cursor"):
            try:
                self.progress = Progress.from_state(status)
            except ValueError:
                self.progress = None

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


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value
