"""`flowexport sync`: run one FlowExport outside Kubernetes, as the operator would."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import dataclasses
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from flowexport import lifecycle
from flowexport.api.conditions import ConditionSet, ConditionUpdate
from flowexport.api.models import Counts, FlowExportStatus, SourceStatus
from flowexport.api.validation import SpecError
from flowexport.aws.blocking import until_stopped
from flowexport.aws.reader import initial_cursor
from flowexport.aws.subscription import Subscription
from flowexport.commands.common import EXIT_OK, EXIT_REJECTED, UsageError
from flowexport.commands.manifest import Manifest, ManifestError, ManifestSecrets, load_manifest
from flowexport.core.encode import encode_csv
from flowexport.core.flows import Flow
from flowexport.errors import Reason
from flowexport.pipeline import Progress
from flowexport.sources.shards import MemoryShardBook, shard_progress
from flowexport.workloads.sync import WorkloadTotals

log = logging.getLogger("flowexport.sync")

#: Attempts at the subscription before a transient AWS failure ends a sync.
SUBSCRIBE_ATTEMPTS = 5

T = TypeVar("T")


def add_parser(commands: Any) -> None:
    """Register the subcommand."""
    parser = commands.add_parser(
        "sync",
        help="run one FlowExport outside Kubernetes (ensure, ingest, upload, print status)",
        description=(
            "Run the FlowExport in FILE (with the Secrets it references in the same file, or "
            "PCE_API_KEY/PCE_API_SECRET and the AWS default credential chain from the "
            "environment): ensure the flow-log subscription, ingest, upload, and print the "
            "status the operator would write, as JSON. With --once: ingest until caught up "
            "and exit 0 (all uploaded), 1 (some flows rejected) or 2 (configuration, "
            "permission or connection errors). Without: poll until SIGINT/SIGTERM, then finish "
            "the batch in flight and save the cursor."
        ),
    )
    parser.add_argument("-f", "--file", type=Path, required=True, help="FlowExport manifest")
    parser.add_argument("--once", action="store_true", help="ingest until caught up, then exit")
    parser.add_argument("--state", type=Path, help="JSON file keeping the cursor and counts")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help=(
            "change nothing anywhere: AWS as with managementPolicy Observe, no workloads, "
            "no upload (each flow it would upload goes to stderr as 'would upload: "
            "<PCE CSV line>'; the counts say what would have been uploaded) and no --state "
            "written"
        ),
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=15.0,
        help="seconds an event must have been ingested before it is read (default 15)",
    )
    parser.add_argument(
        "--external-id",
        metavar="ID",
        help=(
            "ExternalId to send when assuming spec.aws.roleArn (the member role's trust policy "
            "asks for it); the session name is fx-<namespace>-<name> of the manifest"
        ),
    )
    parser.set_defaults(run=run)


@dataclass
class SyncState:
    """What a sync observed, for its status and exit code."""

    manifest: Manifest
    conditions: ConditionSet = field(default_factory=ConditionSet)
    subscription: Subscription | None = None
    progress: Progress | None = None
    failed_at_start: int = 0
    #: This run's workload syncs (spec.workloads Sync), kept up to date by the syncer.
    workloads: WorkloadTotals | None = None
    #: The source's status (mode and start) and its parts' checkpoints (mode stream: shards
    #: of the stored start, as loaded, then as read).
    source: SourceStatus | None = None
    loaded_parts: dict[str, Progress] = field(default_factory=dict)
    book: MemoryShardBook | None = None

    def apply(self, updates: list[ConditionUpdate]) -> None:
        """Apply a step's condition updates (and Ready)."""
        self.conditions.apply(updates, self.manifest.generation)

    def fail(self, step: lifecycle.Step) -> UsageError:
        """Apply a failed step and turn its error into the command's exit-2 error."""
        self.apply(step.updates)
        return UsageError(str(step.error))

    def shard_entries(self) -> dict[str, dict[str, Any]]:
        """Each part's status entry (mode stream: the shards)."""
        if self.source is None:
            return {}
        parts = self.book.shards if self.book is not None else self.loaded_parts
        behind = self.book.behind if self.book is not None else {}
        return {
            shard_id: {
                **p.to_state(),
                "since": self.source.since,
                "millisBehindLatest": behind.get(shard_id),
            }
            for shard_id, p in parts.items()
        }

    def saved(self) -> dict[str, Any]:
        """What --state keeps: the log group's progress, the source and its parts'."""
        assert self.progress is not None
        state = self.progress.to_state()
        if self.source is not None:
            state["source"] = self.source.to_stored()
            state["shards"] = self.shard_entries()
        return state

    def _lag_seconds(self) -> int | None:
        """The log group's lag, or in mode stream the furthest behind of the open shards."""
        if self.book is not None and self.book.shards:
            behind = [
                ms
                for shard_id, ms in self.book.behind.items()
                if ms is not None and not self.book.shards[shard_id].cursor.ended
            ]
            if behind:
                return max(behind) // 1000
        return self.progress.lag_seconds if self.progress else None

    def status(self) -> dict[str, Any]:
        """The status the operator would write, as JSON-ready data."""
        progress = self.progress
        counts = Counts()
        total = None
        if progress is not None:
            # The log group's and every shard's together (as the operator's status has them).
            total = copy.deepcopy(progress)
            for shard in self.book.shards.values() if self.book is not None else ():
                total.add_counts(shard)
            counts = Counts(
                records_read=total.records_read,
                records_skipped=total.records_skipped,
                flows_uploaded=total.flows_uploaded,
                flows_failed=total.flows_failed,
                batches_uploaded=total.batches_uploaded,
            )
        status = FlowExportStatus(
            observed_generation=self.manifest.generation,
            conditions=self.conditions.items,
            flow_log_id=self.subscription.flow_log_id or None if self.subscription else None,
            log_group_arn=self.subscription.log_group_arn or None if self.subscription else None,
            counts=counts,
            last_upload_time=total.last_upload_time if total else None,
            lag_seconds=self._lag_seconds(),
            cursor=progress.cursor.to_status() if progress else None,
            workloads=self.workloads.status() if self.workloads else None,
            source=self.source,
            shards=self.shard_entries() or None,
        )
        return status.model_dump(by_alias=True, mode="json", exclude_none=True)


def run(args: argparse.Namespace) -> int:
    """Sync once or until signalled; print the status as JSON on stdout."""
    try:
        manifest = load_manifest(args.file)
    except SpecError as exc:
        problems = "; ".join(f"{path}: {message}" for path, message in exc.problems)
        raise UsageError(f"invalid FlowExport: {problems}") from None
    except ManifestError as exc:
        raise UsageError(str(exc)) from None
    if args.dry_run:
        manifest = dry_run_of(manifest)
    state = SyncState(manifest)
    try:
        code = asyncio.run(_sync(args, state))
    finally:
        print(json.dumps(state.status(), indent=2), flush=True)
    return code


def dry_run_of(manifest: Manifest) -> Manifest:
    """The manifest as a dry run runs it: nothing created, changed or deleted in AWS
    (managementPolicy Observe) and no workloads touched (mode Off)."""
    spec = manifest.spec
    dry = spec.model_copy(
        update={
            "aws": spec.aws.model_copy(update={"management_policy": "Observe"}),
            "workloads": spec.workloads.model_copy(update={"mode": "Off"}),
        }
    )
    return dataclasses.replace(manifest, spec=dry)


def _print_would_upload(flows: Sequence[Flow]) -> None:
    for line in encode_csv(flows).splitlines():
        print(f"would upload: {line}", file=sys.stderr)
    sys.stderr.flush()


class _StoppedError(Exception):
    """A signal asked sync to stop before ingestion began."""


async def _unless_stopped(step: Awaitable[T], stop: asyncio.Event) -> T:
    result = await until_stopped(step, stop)
    if result is None:
        raise _StoppedError
    return result


async def _subscribe(
    state: SyncState, secrets: ManifestSecrets, stop: asyncio.Event
) -> Subscription:
    manifest = state.manifest
    for attempt in range(1, SUBSCRIBE_ATTEMPTS + 1):
        step = await _unless_stopped(
            lifecycle.subscribe(manifest.spec, manifest.owner, secrets), stop
        )
        if step.error is not None:
            if not step.error.retryable or attempt == SUBSCRIBE_ATTEMPTS:
                raise state.fail(step)
            state.apply(step.updates)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(30.0, 2.0**attempt))
            continue
        for change in step.changes:
            log.info("%s", change)
        state.apply(step.updates)
        state.subscription = step.subscription
        assert step.subscription is not None
        return step.subscription
    raise AssertionError("unreachable")


class _FileShardBook(MemoryShardBook):
    """Shard checkpoints kept in memory and written to --state with each save."""

    def __init__(
        self, write: Callable[[], None], shards: dict[str, Progress] | None = None
    ) -> None:
        super().__init__(shards)
        self.write = write

    async def save(self, shard_id: str, progress: Progress, millis_behind: int | None) -> None:
        """Keep the checkpoint and write the state file."""
        await super().save(shard_id, progress, millis_behind)
        self.write()


class FileSourceStore:
    """`flowexport sync`'s `SourceStore`: the source's state in memory and in --state."""

    shared = False

    def __init__(self, state: SyncState, write: Callable[[], None]) -> None:
        self.state, self.write = state, write

    def stored(self) -> SourceStatus | None:
        """The source as loaded from --state, or as this run set it."""
        return self.state.source

    def parts(self) -> dict[str, dict[str, Any]]:
        """The parts' checkpoints as status entries."""
        return self.state.shard_entries()

    def keep(self, status: SourceStatus) -> None:
        """The same source goes on."""
        self.state.source = status

    async def switch(self, status: SourceStatus, progress: Progress) -> None:
        """A new start: parts forgotten, progress and source written to --state."""
        self.state.progress = copy.deepcopy(progress)
        self.state.source = status
        self.state.loaded_parts = {}
        self.state.book = _FileShardBook(self.write)
        self.write()

    async def others_stopped(self) -> bool:
        """No other replica: nothing to wait for."""
        return True

    def book(self, since: int | None) -> MemoryShardBook:
        """The parts' checkpoints of the stored start (none for a new one)."""
        if self.state.book is None:
            stored = self.state.source
            resumed = stored is not None and since is not None and stored.since == since
            self.state.book = _FileShardBook(
                self.write, self.state.loaded_parts if resumed else None
            )
        return self.state.book

    def announce(
        self, reason: str, message: str, *, warning: bool = False, part: str | None = None
    ) -> None:
        """A log line."""
        log.log(logging.WARNING if warning else logging.INFO, "%s: %s", reason, message)


def _load_progress(args: argparse.Namespace, state: SyncState) -> Progress:
    if args.state is not None and args.state.exists():
        try:
            saved = json.loads(args.state.read_text())
            progress = Progress.from_state(saved)
            state.source = SourceStatus.from_stored(saved.get("source"))
            since = state.source.since if state.source is not None else None
            if since is not None:
                state.loaded_parts = {
                    str(shard_id): p
                    for shard_id, entry in (saved.get("shards") or {}).items()
                    if (p := shard_progress(entry, since)) is not None
                }
            return progress
        except (OSError, ValueError, AttributeError) as exc:
            raise UsageError(f"cannot resume from {args.state}: {exc}") from None
    start = state.manifest.spec.ingestion.start_from
    return Progress(initial_cursor(start, int(time.time() * 1000)))


async def _sync(args: argparse.Namespace, state: SyncState) -> int:
    stop = asyncio.Event()
    received: list[int] = []

    def on_signal(sig: int) -> None:
        received.append(sig)
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        code = await _run(args, state, stop)
    except _StoppedError:
        log.info("stopped before ingesting")
        code = EXIT_OK
    if args.once and stop.is_set():
        return 128 + received[0]  # interrupted: not everything was read
    return code


async def _run(args: argparse.Namespace, state: SyncState, stop: asyncio.Event) -> int:
    spec = state.manifest.spec
    secrets = ManifestSecrets(state.manifest, external_id=args.external_id)
    checked = await _unless_stopped(lifecycle.check_pce_credentials(spec, secrets), stop)
    if checked.error is not None:  # before anything is done in AWS
        raise state.fail(checked)
    subscription = await _subscribe(state, secrets, stop)
    probe = await _unless_stopped(lifecycle.probe(spec, secrets), stop)
    if probe.error is not None:
        raise state.fail(probe)
    state.apply([*probe.updates, lifecycle.workloads_expected(spec)])
    if spec.workloads.mode == "Sync":
        state.workloads = WorkloadTotals()
    state.progress = progress = _load_progress(args, state)
    state.failed_at_start = progress.flows_failed
    if spec.suspend:
        suspended = [lifecycle.suspended()]
        if spec.workloads.mode == "Sync":  # workloads are not synced while suspended
            suspended.append(lifecycle.workloads_suspended())
        state.apply(suspended)
        return EXIT_OK

    def write_state() -> None:
        if args.state is not None and not args.dry_run:
            temporary = args.state.with_suffix(args.state.suffix + ".tmp")
            temporary.write_text(json.dumps(state.saved()))
            temporary.replace(args.state)

    async def save(saved: Progress) -> None:
        state.progress = saved
        write_state()

    async def report(update: ConditionUpdate) -> None:
        state.apply([update])

    ingested = await lifecycle.ingest(
        lifecycle.Ingestion(
            spec,
            subscription,
            secrets,
            progress,
            save,
            FileSourceStore(state, write_state),
            stop,
            report,
            settle_seconds=args.settle,
            once=args.once,
            owner=state.manifest.owner,
            workload_totals=state.workloads,
            dry_run=_print_would_upload if args.dry_run else None,
        )
    )
    state.progress = ingested.progress
    error = ingested.error
    if error is not None and error.reason is Reason.OBJECT_UNREADABLE:
        # Mode s3 --once: the rest was read; the objects that could not be are named.
        state.apply(ingested.updates)
        print(f"flowexport sync: {error}", file=sys.stderr, flush=True)
        return EXIT_REJECTED
    if error is not None:
        raise state.fail(ingested)
    if stop.is_set():
        log.info("stopped; cursor saved")
        sys.stderr.flush()
    failed = state.progress.flows_failed - state.failed_at_start if state.progress else 0
    return EXIT_REJECTED if failed else EXIT_OK
