"""One writer per FlowExport for its status: conditions, counts, cursor, throttled patches.

Each write is a JSON merge patch that turns the status *as stored* into the document this
replica holds: the status the API server answered the last write with, and the one the watch
delivers (`track`) when something else wrote since (a user wiping it, another replica), so a
status wiped or changed by hand converges to the whole document at the next write. A write the
API server refuses (a 409 is re-applied at once), or that times out, never raises: the change
stays pending and the next write carries it; `save` retries until written (a checkpoint).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from flowexport.api.conditions import ConditionSet, ConditionUpdate, Transition
from flowexport.api.models import FlowExportStatus, SourceStatus
from flowexport.kube import metrics
from flowexport.pipeline import STOP_GRACE_SECONDS, Progress

log = logging.getLogger("flowexport.operator")

#: Merge-patches the status subresource; answers the object as stored after the patch (or
#: None when it cannot say).
Writer = Callable[[str, str, dict[str, Any]], Awaitable[Any]]

#: Fields that move on every poll of an idle log group (the cursor follows the clock).
IDLE_FIELDS = frozenset({"cursor", "lagSeconds"})
#: Seconds between unforced writes that would change only `IDLE_FIELDS`: an idle FlowExport
#: patches its status this often, not once per poll. Nothing is lost by the wait: a restart
#: re-reads at most this much of a log group in which nothing was found.
IDLE_WRITE_SECONDS = 300.0
#: Seconds before retrying a write that failed (doubling up to the second value): a checkpoint
#: waits at most the longer after the API server is back.
RETRY_SECONDS = (0.25, 2.0)
#: Times a write the API server refused with 409 Conflict is re-applied at once.
CONFLICT_RETRIES = 3
#: Unanswered writes whose possible outcome a patch also covers (see `StatusWriter._maybe`).
MAYBE_KEPT = 8
#: Longest wait for one write (the client's own timeouts end it sooner).
WRITE_TIMEOUT_SECONDS = 15.0
#: Once the worker stops, seconds its writes may still take: past the pipeline's grace for an
#: upload in flight, so the stop's last checkpoint is tried, and well inside kopf's 7 s before
#: it cancels the worker (a SIGTERM ends the operator within 10 s whatever the API server does).
STOP_WRITE_SECONDS = STOP_GRACE_SECONDS + 1.5


class StatusWriter:
    """Everything the operator knows of one FlowExport's status, written as one document.

    Handlers and the ingestion worker both report here, so neither overwrites the other's
    conditions. Writes are throttled to one per `min_interval` unless forced, and to one per
    `idle_interval` when only the cursor of an idle log group moved; after a failed write,
    unforced ones back off (`RETRY_SECONDS`).

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
        #: This replica's shard entries as stored after its last write.
        self._last_shards: dict[str, dict[str, Any]] = {}
        self._lock = asyncio.Lock()
        self._written = float("-inf")  # the first write is never throttled
        #: The status as stored after the last write (its shard entries apart).
        self._last: dict[str, Any] | None = None
        #: The object as the watch delivers it (kopf's live body), when tracked.
        self._body: Mapping[str, Any] | None = None
        #: resourceVersions this writer's writes made: a body at one of them shows nothing new.
        self._versions: deque[str] = deque(maxlen=16)
        #: What stored status (shard entries under "shards") a write that failed without an
        #: answer may have left: it may have been applied.
        self._maybe: list[dict[str, Any]] = []
        self.failures = 0
        self._retry_at = float("-inf")
        self._dropped_said = False
        self._deadline: float | None = None
        self._stopping = asyncio.Event()

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

    def track(self, body: Mapping[str, Any]) -> None:
        """Compare writes with the object as the watch delivers it (kopf keeps `body` current),
        so a status changed by someone else (wiped, restored without status) is repaired."""
        self._body = body

    def stopping(self) -> None:
        """The worker is stopping: writes, the one under way included, give up
        `STOP_WRITE_SECONDS` from now."""
        if self._deadline is None:
            self._deadline = time.monotonic() + STOP_WRITE_SECONDS
            self._stopping.set()

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
        """Patch the status if it differs from the stored one and the throttle allows (or
        `force`); a throttled change, or one the API server refused, stays pending for the
        next call. Returns whether nothing is pending. Never raises for a failed write."""
        async with self._lock:
            now = time.monotonic()
            if self._deadline is not None and now >= self._deadline:
                return False
            if not force and now < max(self._retry_at, self._written + self.min_interval):
                return False
            for attempt in range(CONFLICT_RETRIES + 1):
                try:
                    return await self._write_once(force)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if _code(exc) == 409 and attempt < CONFLICT_RETRIES:
                        # Normal under contention: re-applied against the status as the
                        # watch now shows it.
                        log.debug("%s/%s: status write conflicted; re-applying", *self._key)
                        continue
                    self._failed(exc)
                    return False
            return False

    async def save(self) -> bool:
        """Write now, and again until it is written (a checkpoint after an upload: the caller
        waits here rather than upload past a cursor it could not save). Gives up only once the
        worker is stopping (`stopping`); returns whether it was written."""
        delay = RETRY_SECONDS[0]
        while not await self.write(force=True):
            remaining = float("inf")
            if self._deadline is not None:
                remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(delay, remaining))
            delay = min(RETRY_SECONDS[1], delay * 2)
        return True

    @property
    def _key(self) -> tuple[str, str]:
        return self.namespace, self.name

    async def _write_once(self, force: bool) -> bool:
        if self._drop_shards is None:
            # Every entry goes, other replicas' too (a new stream start or mode poll).
            await self._send({"shards": None})
            self._drop_shards, self._last_shards = set(), {}
        document, entries = self.document(), self.own_entries()
        stored, stored_shards = self._stored()
        patch = merge_patch_over(stored, document) if not self.shards_only else {}
        # Per key: never null an entry this replica does not write.
        shard_patch: dict[str, Any] = dict.fromkeys(self._drop_shards)
        for shard_id, entry in entries.items():
            changed = merge_patch_over([s.get(shard_id) or {} for s in stored_shards], entry)
            if changed:
                shard_patch[shard_id] = changed
        if shard_patch:
            patch["shards"] = shard_patch
        idle = bool(patch) and patch.keys() <= IDLE_FIELDS
        if idle and not force and time.monotonic() - self._written < self.idle_interval:
            return False
        if patch:
            answer = await self._send(patch)
            self._written = time.monotonic()
            self._settle(document, entries, answer)
        elif self.failures:
            self._recovered()
        return True

    def _stored(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """What the stored status may be (its shard entries apart): as the last write left
        it, as a write that failed without an answer may have left it, and as the watch shows
        it when it shows something newer than this writer's own writes."""
        statuses = [self._last or {}]
        shards = [self._last_shards]
        for maybe in self._maybe:
            statuses.append({k: v for k, v in maybe.items() if k != "shards"})
            shards.append(_dict(maybe.get("shards")))
        body = self._body
        if body is not None:
            version = str((body.get("metadata") or {}).get("resourceVersion") or "")
            if version and version not in self._versions:
                status = _dict(body.get("status"))
                statuses.append({k: v for k, v in status.items() if k != "shards"})
                shards.append(_dict(status.get("shards")))
        return statuses, shards

    async def _send(self, patch: dict[str, Any]) -> Any:
        """One write, abandoned after `WRITE_TIMEOUT_SECONDS`, or at the stop deadline once
        the worker is stopping (also while it is under way)."""
        if self._deadline is not None and time.monotonic() >= self._deadline:
            raise TimeoutError("the worker is stopping")
        task = asyncio.ensure_future(self.writer(self.namespace, self.name, patch))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait(
                {task, stopping}, timeout=WRITE_TIMEOUT_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
            if not task.done() and self._deadline is not None:
                await asyncio.wait({task}, timeout=max(0.0, self._deadline - time.monotonic()))
            if not task.done():
                raise TimeoutError("the status write did not finish in time")
            return task.result()
        except Exception as exc:
            if _code(exc) is None:  # no answer: the patch may have been applied
                stored = copy.deepcopy(self._last or {})
                if self._last_shards:
                    stored["shards"] = copy.deepcopy(self._last_shards)
                maybe = apply_merge_patch(stored, patch)
                if maybe not in self._maybe:
                    # Bounded: an outage retries the same document, so few are distinct.
                    self._maybe = [*self._maybe, maybe][-MAYBE_KEPT:]
            raise
        finally:
            stopping.cancel()
            if not task.done():
                task.cancel()

    def _settle(
        self, document: dict[str, Any], entries: dict[str, dict[str, Any]], answer: Any
    ) -> None:
        """After a write: the status as stored, from the API server's answer when it gave
        one (it also shows what others wrote), else as written."""
        status = _dict(answer.get("status")) if isinstance(answer, Mapping) else None
        if status is not None:
            version = (answer.get("metadata") or {}).get("resourceVersion")
            if version:
                self._versions.append(str(version))
            stored_shards = _dict(status.get("shards"))
            if not self.shards_only:
                stored = {k: v for k, v in status.items() if k != "shards"}
                # What the API server did not keep of what was just written (a field its
                # schema prunes) is taken as written: re-sending it would never end.
                dropped = _without_nulls(merge_patch(stored, document))
                if dropped and not self._dropped_said:
                    self._dropped_said = True
                    log.warning(
                        "%s/%s: the API server did not keep status fields %s",
                        *self._key,
                        ", ".join(sorted(dropped)),
                    )
                self._last = apply_merge_patch(stored, dropped)
            self._last_shards = {k: _dict(stored_shards.get(k)) for k in entries}
        else:
            if not self.shards_only:
                self._last = document
            self._last_shards = entries
        self._drop_shards = set()
        self._maybe = []
        if self.failures:
            self._recovered()

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self._retry_at = time.monotonic() + min(
            RETRY_SECONDS[1], RETRY_SECONDS[0] * 2 ** min(self.failures - 1, 10)
        )
        code = _code(exc)
        said = f"HTTP {code}" if code is not None else type(exc).__name__
        if self.failures == 1:
            log.warning("%s/%s: status write failed (%s); kept and retried", *self._key, said)
        else:
            log.debug("%s/%s: status write failed again (%s)", *self._key, said)

    def _recovered(self) -> None:
        log.info("%s/%s: status written after %d failed attempts", *self._key, self.failures)
        self.failures = 0
        self._retry_at = float("-inf")


def merge_patch(stored: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns `stored` into `wanted`: changed fields, and
    null for each field `wanted` no longer has, at any depth. A field the patch left out would
    survive from an older write (e.g. a cursor's page token after its slice closed)."""
    return merge_patch_over([stored], wanted)


_MISSING = object()


def merge_patch_over(stored: Sequence[dict[str, Any]], wanted: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch that turns each of `stored` into `wanted` (when it is not known
    which of them the API server holds): a field is left out only where every one of them
    already has the wanted value, and nulled where any of them has a field `wanted` lacks."""
    patch: dict[str, Any] = {}
    for base in stored:
        for key in base:
            if key not in wanted:
                patch[key] = None
    for key, value in wanted.items():
        olds = [base.get(key, _MISSING) for base in stored]
        if all(old == value for old in olds):
            continue
        if isinstance(value, dict) and all(isinstance(o, dict) or o is _MISSING for o in olds):
            nested = merge_patch_over([o if isinstance(o, dict) else {} for o in olds], value)
            if nested or _MISSING in olds:  # an empty object is created where it is missing
                patch[key] = nested
        else:
            patch[key] = value
    return patch


def apply_merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """`target` as a JSON merge patch (RFC 7386) leaves it."""
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict):
            old = merged.get(key)
            merged[key] = apply_merge_patch(old if isinstance(old, dict) else {}, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _code(exc: BaseException) -> int | None:
    """The HTTP status an API error carries (the official client's `ApiException.status`),
    or None for a failure without an answer (a timeout, a broken connection)."""
    if not isinstance(exc, ApiException):
        return None
    code = exc.status
    return code if isinstance(code, int) and code > 0 else None


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


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
