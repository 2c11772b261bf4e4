"""Keep a FlowExport's unmanaged workloads in the PCE in step with its VPC.

A sync reads the VPC (two paginated AWS calls), lists the org's workloads and labels once
(the PCE's asynchronous collection when there are more than a synchronous GET returns),
creates the labels it lacks, and applies the plan with `bulk_create`, `bulk_update` and
`bulk_delete` (1,000 items per request, one bulk operation at a time). Between syncs, peer
addresses seen in flows get their workloads just before the flows that name them are
uploaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from flowexport.api.conditions import ConditionType, ConditionUpdate, Report
from flowexport.api.models import FlowExportSpec, WorkloadsStatus
from flowexport.aws.blocking import off_loop
from flowexport.aws.interfaces import discover
from flowexport.aws.session import AwsClients
from flowexport.core.flows import Flow
from flowexport.errors import FlowExportError, Reason, unexpected
from flowexport.pce.client import PCEClient, bulk_errors
from flowexport.pce.errors import PCERequestError
from flowexport.workloads.desired import (
    PEER_PREFIX,
    DesiredWorkload,
    desired_workloads,
    peer_networks,
    peer_workloads,
    within,
)
from flowexport.workloads.plan import (
    PceWorkload,
    Plan,
    make_plan,
    ours,
    workload_body,
)

log = logging.getLogger("flowexport.workloads")

#: The longest external_data_set the PCE takes.
MAX_MARK = 255
#: Peer workloads one FlowExport creates at most (a peer CIDR as wide as the internet must
#: not turn every address in the flows into a workload).
MAX_PEERS = 10_000
#: Item errors kept for the condition message.
MAX_ERRORS = 5
#: New labels one sync creates at most: the PCE has no bulk label API (one POST each, within
#: the key's 500 requests a minute), and tags are the VPC owners' free text; the rest waits for
#: the next sync, reported.
MAX_NEW_LABELS = 200
#: First wait after a retryable failure; it doubles up to spec.workloads.refreshSeconds.
RETRY_SECONDS = 15.0


def mark_of(owner: str, vpc_id: str) -> str:
    """The external_data_set of the workloads the FlowExport `owner` (namespace/name) owns for
    a VPC. The VPC is part of it: two clusters with a FlowExport of the same name for different
    VPCs of one PCE org never take each other's workloads."""
    mark = f"flowexport.io/{vpc_id}/{owner}"
    if len(mark) <= MAX_MARK:
        return mark
    digest = hashlib.sha256(mark.encode()).hexdigest()[:16]
    return f"{mark[: MAX_MARK - 17]}#{digest}"


@dataclass
class WorkloadTotals:
    """What the syncs did since the FlowExport was created (kept in its status)."""

    managed: int = 0
    created: int = 0
    updated: int = 0
    deleted: int = 0
    failed: int = 0
    covered: int = 0
    last_sync_time: datetime | None = None

    def status(self) -> WorkloadsStatus:
        """As the status's `workloads` field (the API model)."""
        return WorkloadsStatus.model_validate(asdict(self))

    def to_status(self) -> dict[str, Any]:
        """The status's `workloads` field, JSON-ready."""
        return self.status().model_dump(by_alias=True, mode="json", exclude_none=True)

    @classmethod
    def from_status(cls, status: Any) -> WorkloadTotals:
        """Read back what `to_status` wrote; anything else starts from zero."""
        try:
            stored = WorkloadsStatus.model_validate(status)
        except ValidationError:
            return cls()
        return cls(**stored.model_dump())


@dataclass
class SyncResult:
    """One sync (or one peer creation): its changes and the problems met."""

    created: int = 0
    updated: int = 0
    deleted: int = 0
    failed: int = 0
    covered: int = 0
    managed: int = 0
    errors: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: Of `seconds`, the time reading the VPC from AWS.
    discover_seconds: float = 0.0
    #: New labels left for the next sync (more than MAX_NEW_LABELS were needed): it comes soon.
    pending_labels: int = 0

    @property
    def changes(self) -> int:
        """Workloads created, updated or deleted."""
        return self.created + self.updated + self.deleted

    def summary(self) -> str:
        """One line for Events and logs."""
        return (
            f"created {self.created}, updated {self.updated}, deleted {self.deleted} workloads"
            + (f"; {self.failed} refused" if self.failed else "")
        )


class WorkloadSync:
    """The workloads of one FlowExport: full syncs and peer addresses."""

    def __init__(
        self,
        spec: FlowExportSpec,
        clients: AwsClients,
        pce: PCEClient,
        owner: str,
        totals: WorkloadTotals | None = None,
    ) -> None:
        self.spec = spec.workloads
        self.vpc_id = spec.aws.vpc
        self.clients = clients
        self.pce = pce
        self.mark = mark_of(owner, self.vpc_id)
        self.totals = totals or WorkloadTotals()
        self._lock = asyncio.Lock()
        self._labels: dict[tuple[str, str], str] = {}
        self._networks = peer_networks(self.spec)
        #: Addresses that have a workload (ours or another's) as of the last sync.
        self._known: set[str] = set()
        #: Peer addresses with a workload of ours, or refused until the next sync.
        self._peers: set[str] = set()
        self._refused: set[str] = set()

    async def sync(self) -> SyncResult:
        """One full sync; raises FlowExportError when AWS or the PCE fails as a whole (item
        failures are counted in the result instead)."""
        async with self._lock:
            started = time.monotonic()
            inventory = await off_loop(discover, self.clients, self.vpc_id)
            discovered = time.monotonic()
            desired = desired_workloads(inventory, self.spec, self.vpc_id)
            items = await self.pce.collection("workloads")
            existing = [w for w in (PceWorkload.parse(i) for i in items) if w is not None]
            vpc_addresses = {a for w in desired.workloads for a in w.addresses}
            peers = {
                ref.removeprefix(PEER_PREFIX)
                for ref in ours(existing, self.mark)
                if ref.startswith(PEER_PREFIX)
            } | self._peers
            peer_wanted = peer_workloads(
                self.spec, sorted(peers - vpc_addresses)[:MAX_PEERS], self.vpc_id
            )
            wanted = desired.workloads + peer_wanted
            # A peer that is now in the VPC, or no longer in peerCidrs, is not an interface
            # gone: its workload goes whatever onEniGone says.
            kept_peers = {w.ref for w in peer_wanted}
            drop = {f"{PEER_PREFIX}{a}" for a in peers} - kept_peers
            result = SyncResult(problems=desired.problems, discover_seconds=discovered - started)
            wanted = await self._ensure_labels(wanted, result, refresh=True)
            plan = make_plan(
                wanted,
                existing,
                self.mark,
                self._labels,
                delete_gone=self.spec.on_eni_gone == "Delete",
                drop=drop,
            )
            result.covered = len(plan.covered)
            created = await self._apply(plan, result)
            self._peers = {
                ref.removeprefix(PEER_PREFIX)
                for ref in [*plan.kept, *(w.ref for w in created)]
                if ref.startswith(PEER_PREFIX)
            }
            self._known = set(plan.held) | vpc_addresses | self._peers
            self._refused.clear()
            result.managed = len(plan.kept) + len(created)
            result.seconds = time.monotonic() - started
            self._count(result, full=True)
            log.info(
                "workloads of %s synced in %.1fs (%.1fs reading AWS): %s (%d addresses left to "
                "other workloads)",
                self.mark,
                result.seconds,
                result.discover_seconds,
                result.summary(),
                result.covered,
            )
            return result

    async def ensure_peers(self, flows: Sequence[Flow]) -> SyncResult | None:
        """Workloads for the peer addresses in these flows that have none yet (before they are
        uploaded); None when there were none to make."""
        if not self._networks:
            return None
        seen = self._known | self._peers | self._refused
        new = {
            address
            for flow in flows
            for address in (flow.client_ip, flow.server_ip)
            if address not in seen and within(address, self._networks)
        }
        if not new:
            return None
        async with self._lock:
            new -= self._known | self._peers | self._refused
            room = MAX_PEERS - len(self._peers)
            if room <= 0 or not new:
                if new:
                    self._refused |= new
                    log.warning("%s: %d peer workloads already; no more made", self.mark, MAX_PEERS)
                return None
            result = SyncResult()
            try:
                wanted = await self._ensure_labels(
                    peer_workloads(self.spec, sorted(new)[:room], self.vpc_id),
                    result,
                    refresh=False,
                )
                created = await self._apply(Plan(create=wanted), result)
            except FlowExportError as exc:
                if exc.retryable:
                    raise  # the flush is retried with backoff
                # Refused for good: the flows are uploaded anyway; the next sync tries again.
                log.warning("%s: peer workloads not made: %s", self.mark, exc)
                self._refused |= new
                result.failed += len(new)
                result.errors.append(f"peer workloads: {exc}")
                result.managed = self.totals.managed
                self._count(result, full=False)
                return result
            made = {w.ref.removeprefix(PEER_PREFIX) for w in created}
            self._peers |= made
            self._known |= made
            self._refused |= new - made
            result.managed = self.totals.managed + len(created)
            self._count(result, full=False)
            return result

    async def _ensure_labels(
        self, wanted: list[DesiredWorkload], result: SyncResult, *, refresh: bool
    ) -> list[DesiredWorkload]:
        """Find or create the labels `wanted` carry; the workloads without any label the PCE
        refused to create (each refusal counted in `result`; the rest of the sync goes on)."""
        needed = {pair for w in wanted for pair in w.labels}
        if refresh or not needed <= self._labels.keys():
            self._labels = {
                (str(label["key"]), str(label["value"])): str(label["href"])
                for label in await self.pce.collection("labels")
                if label.get("href") and label.get("key") and isinstance(label.get("value"), str)
            }
        refused = set()
        missing = sorted(needed - self._labels.keys())
        if len(missing) > MAX_NEW_LABELS:
            later = missing[MAX_NEW_LABELS:]
            refused.update(later)  # not refusals: left off for now, made by the next syncs
            result.pending_labels = len(later)
            result.problems.append(
                f"{len(later)} more new labels than the {MAX_NEW_LABELS} one sync creates: "
                "left off until the next sync"
            )
            missing = missing[:MAX_NEW_LABELS]
        for key, value in missing:
            try:
                label = await self.pce.create_label(key, value)
            except PCERequestError as exc:  # a key the PCE lacks, a value it refuses
                refused.add((key, value))
                result.failed += 1
                if len(result.errors) < MAX_ERRORS:
                    result.errors.append(f"label {key}={value[:64]}: {exc}")
                continue
            self._labels[(key, value)] = str(label["href"])
            log.info("created PCE label %s=%s", key, value)
        if not refused:
            return wanted
        return [replace(w, labels=tuple(p for p in w.labels if p not in refused)) for w in wanted]

    async def _apply(self, plan: Plan, result: SyncResult) -> list[DesiredWorkload]:
        """Delete, update, create; the created workloads. Item failures are counted."""
        if plan.delete:
            answers = await self.pce.bulk("delete", [{"href": w.href} for w in plan.delete])
            # The PCE may answer only the items that failed: the others were deleted.
            result.deleted += len(plan.delete) - self._refusals(answers, result)
        if plan.update:
            bodies = [workload_body(w, self.mark, self._labels, c.href) for c, w in plan.update]
            answers = await self.pce.bulk("update", bodies)
            result.updated += len(answers) - self._refusals(answers, result)
        created: list[DesiredWorkload] = []
        if plan.create:
            bodies = [workload_body(w, self.mark, self._labels) for w in plan.create]
            answers = await self.pce.bulk("create", bodies)
            for wanted, answer in zip(plan.create, answers, strict=True):
                if not self._refusals([answer], result, wanted.ref):
                    created.append(wanted)
            result.created += len(created)
        return created

    @staticmethod
    def _refusals(answers: list[dict[str, Any]], result: SyncResult, what: str = "") -> int:
        """How many items the PCE refused; each is counted and the first few kept."""
        refused = 0
        for answer in answers:
            problem = bulk_errors(answer)
            if problem:
                refused += 1
                result.failed += 1
                if len(result.errors) < MAX_ERRORS:
                    result.errors.append(f"{what or answer.get('href') or 'a workload'}: {problem}")
        return refused

    def _count(self, result: SyncResult, *, full: bool) -> None:
        totals = self.totals
        totals.created += result.created
        totals.updated += result.updated
        totals.deleted += result.deleted
        totals.managed = result.managed
        if full:  # refusals and covered addresses are the last sync's, not running totals
            totals.failed = result.failed
            totals.covered = result.covered
        else:
            totals.failed += result.failed
            totals.last_sync_time = datetime.now(UTC)


def synced(result: SyncResult) -> ConditionUpdate:
    """WorkloadsSynced after a sync that ran to its end."""
    if result.failed:
        return ConditionUpdate(
            ConditionType.WORKLOADS_SYNCED,
            False,
            Reason.WORKLOADS_REJECTED,
            f"the PCE refused {result.failed} workload changes: " + "; ".join(result.errors),
        )
    message = f"{result.managed} workloads follow the VPC; last sync {result.summary()}"
    if result.covered:
        message += f"; {result.covered} addresses already belong to other workloads"
    if result.problems:
        message += "; " + "; ".join(result.problems[:MAX_ERRORS])
    return ConditionUpdate(ConditionType.WORKLOADS_SYNCED, True, Reason.SYNCED, message)


def sync_failed(exc: FlowExportError) -> ConditionUpdate:
    """WorkloadsSynced after a sync that failed as a whole."""
    message = f"retrying: {exc}" if exc.retryable else str(exc)
    return ConditionUpdate(ConditionType.WORKLOADS_SYNCED, False, exc.reason, message)


OnResult = Callable[[SyncResult], Awaitable[None]]


async def keep_synced(
    syncer: WorkloadSync,
    stop: asyncio.Event,
    first: asyncio.Event,
    report: Report,
    on_result: OnResult | None = None,
) -> None:
    """Sync now and every refreshSeconds until `stop`; `first` is set after the first sync
    that ran to its end. Retryable failures back off; a terminal one before the first sync
    is raised (uploads wait for it), after it is reported and retried at the next refresh."""
    refresh = float(syncer.spec.refresh_seconds)
    failures = 0
    while not stop.is_set():
        try:
            result = await syncer.sync()
        except Exception as exc:
            error = exc if isinstance(exc, FlowExportError) else unexpected(exc)
            if not isinstance(exc, FlowExportError):
                log.exception("workload sync failed unexpectedly")
            if not error.retryable and not first.is_set():
                raise error from None
            failures += 1
            delay = min(refresh, RETRY_SECONDS * 2 ** min(failures - 1, 10))
            if not error.retryable:
                delay = refresh
            log.warning("workload sync failed (%s); retrying in %.0fs", error, delay)
            with contextlib.suppress(Exception):  # logged by the reporter; the loop goes on
                await report(sync_failed(error))
        else:
            failures = 0
            delay = RETRY_SECONDS if result.pending_labels else refresh
            first.set()
            try:
                await report(synced(result))
                if on_result is not None:
                    await on_result(result)
            except Exception:  # a status write failing must not end the syncs
                log.exception("reporting a workload sync failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)


async def delete_workloads(pce: PCEClient, owner: str, vpc_id: str) -> int:
    """Delete every workload the FlowExport `owner` created for the VPC (its mark, compared
    exactly); how many went. Raises FlowExportError when the PCE fails or refuses one."""
    mark = mark_of(owner, vpc_id)
    existing = [w for w in map(PceWorkload.parse, await pce.collection("workloads")) if w]
    mine = [w for found in ours(existing, mark).values() for w in found]
    if not mine:
        return 0
    answers = await pce.bulk("delete", [{"href": w.href} for w in mine])
    problems = [p for p in map(bulk_errors, answers) if p]
    if problems:
        raise PCERequestError(
            f"the PCE refused to delete {len(problems)} of this FlowExport's workloads: "
            + "; ".join(problems[:MAX_ERRORS])
        )
    return len(mine)
