"""Condition types and reasons of a FlowExport, and how `Ready`, `Reconciling` and `Stalled`
are computed from the stages.

Every reason the product can write is a `Reason` member; each says when it is set and whether
it is terminal (only a change to the spec, a Secret, IAM or AWS itself can clear it; the
operator then waits instead of backing off) or retryable (the operator retries with backoff).
`docs/conditions.md` holds the same table for users; a test keeps the two equal.

Beside `Ready` the status carries `Reconciling` and `Stalled`, the "abnormal-true" conditions
that Flux's kstatus (sigs.k8s.io/cli-utils pkg/kstatus/status) and the Argo CD health check read:
`Stalled` is True while the first failing stage has a terminal reason (kstatus: Failed),
`Reconciling` while a stage is not yet known, not yet evaluated for the newest generation, or
failing with a retryable reason (kstatus: InProgress). Both are False, not removed, when `Ready`
is True and while suspended (kstatus treats False and absent alike; a condition that is always
there lets `kubectl wait --for=condition=Stalled=false` work). Both carry `Ready`'s reason and
message, so the three never disagree.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from flowexport.api.models import Condition
from flowexport.errors import FlowExportError, Reason


class ConditionType(StrEnum):
    """The conditions a FlowExport's status carries."""

    # True when every stage below is True; otherwise the first stage that is not, its reason.
    READY = "Ready"
    # Abnormal-true (kstatus): a stage is pending, re-evaluated or failing with a retryable reason.
    RECONCILING = "Reconciling"
    # Abnormal-true (kstatus): a stage failed with a terminal reason; only the user can clear it.
    STALLED = "Stalled"
    # The log group and the VPC flow log delivering to it exist as the spec asks.
    SUBSCRIPTION_READY = "SubscriptionReady"
    # The PCE answered an authenticated request for the spec's org.
    PCE_REACHABLE = "PCEReachable"
    # The PCE's workloads follow the VPC's network interfaces (True at once when mode is Off).
    WORKLOADS_SYNCED = "WorkloadsSynced"
    # The ingestion worker reads and uploads (False while suspended or failing).
    INGESTING = "Ingesting"


#: The stages whose conjunction is `Ready`, in the order `Ready` reports the first failing one.
STAGES: tuple[ConditionType, ...] = (
    ConditionType.SUBSCRIPTION_READY,
    ConditionType.PCE_REACHABLE,
    ConditionType.WORKLOADS_SYNCED,
    ConditionType.INGESTING,
)

#: The conditions computed from the stages (never set by a step), in the order they are listed.
SUMMARY: tuple[ConditionType, ...] = (
    ConditionType.READY,
    ConditionType.RECONCILING,
    ConditionType.STALLED,
)

#: The conditions that are True when something is wrong or in flight (kstatus's convention).
ABNORMAL_TRUE = frozenset({ConditionType.RECONCILING, ConditionType.STALLED})


_KNOWN = frozenset(str(r) for r in Reason)

#: The longest condition message the API accepts (metav1.Condition).
MAX_MESSAGE = 32768


@dataclass(frozen=True)
class ConditionUpdate:
    """One condition as a step decided it: True (ok), False or Unknown (None)."""

    type: ConditionType
    ok: bool | None
    reason: Reason
    message: str


def failed(type_: ConditionType, exc: FlowExportError) -> ConditionUpdate:
    """The condition for a failed stage; a retryable failure says it is being retried."""
    message = f"retrying: {exc}" if exc.retryable else str(exc)
    return ConditionUpdate(type_, False, exc.reason, message)


#: The Ingesting message while the worker keeps up with what it reads.
CAUGHT_UP = "caught up with the log group"


def caught_up() -> ConditionUpdate:
    """Ingesting after a read that reached the end of the log group."""
    return ConditionUpdate(ConditionType.INGESTING, True, Reason.INGESTING, CAUGHT_UP)


#: Where a step reports a condition as it goes (the operator's status, `sync`'s printout).
Report = Callable[[ConditionUpdate], Awaitable[None]]


def set_condition(
    conditions: Sequence[Condition],
    update: ConditionUpdate,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """Conditions with `update` applied; its transition time moves only when its status does.
    An update for an older generation than the condition was set for is ignored."""
    status = "Unknown" if update.ok is None else ("True" if update.ok else "False")
    previous = next((c for c in conditions if c.type == update.type), None)
    seen = previous.observed_generation if previous else None
    if seen is not None and generation is not None and generation < seen:
        return list(conditions)  # a late word about an older generation (a stopping worker)
    since = previous.last_transition_time if previous and previous.status == status else now
    updated = Condition(
        type=str(update.type),
        status=status,
        reason=str(update.reason),
        message=update.message[:MAX_MESSAGE],
        last_transition_time=since,
        observed_generation=generation,
    )
    others = [c for c in conditions if c.type != update.type]
    return _ordered([*others, updated])


def ready_of(conditions: Sequence[Condition]) -> ConditionUpdate:
    """`Ready` as the stages say: True when every stage is True, else the first that is not; a
    stage not yet evaluated for the newest generation any stage was set for counts as pending."""
    by_type = {c.type: c for c in conditions}
    newest = _newest_generation(conditions)
    for stage in STAGES:
        condition = by_type.get(stage)
        if condition is None:
            return ConditionUpdate(
                ConditionType.READY, None, Reason.PENDING, f"{stage} not yet known"
            )
        seen = condition.observed_generation
        if newest is not None and seen is not None and seen < newest:
            return ConditionUpdate(
                ConditionType.READY,
                None,
                Reason.PENDING,
                f"{stage} not yet evaluated for generation {newest}",
            )
        if condition.status != "True":
            if condition.reason not in _KNOWN:  # written by an older version; re-evaluated soon
                return ConditionUpdate(
                    ConditionType.READY, None, Reason.PENDING, f"{stage} being re-evaluated"
                )
            ok = None if condition.status == "Unknown" else False
            return ConditionUpdate(
                ConditionType.READY, ok, Reason(condition.reason), condition.message
            )
    return ConditionUpdate(ConditionType.READY, True, Reason.READY, "exporting flows")


def kstatus_of(ready: ConditionUpdate) -> tuple[ConditionUpdate, ConditionUpdate]:
    """`Reconciling` and `Stalled` for a `Ready` (see the module docstring): Stalled when it is
    False with a terminal reason, Reconciling when it is not True for any other reason than a
    suspension; both with `Ready`'s reason and message."""
    stalled = ready.ok is False and ready.reason.is_error and not ready.reason.retryable
    settled = ready.ok is True or ready.reason is Reason.SUSPENDED or stalled
    return (
        ConditionUpdate(ConditionType.RECONCILING, not settled, ready.reason, ready.message),
        ConditionUpdate(ConditionType.STALLED, stalled, ready.reason, ready.message),
    )


def with_ready(
    conditions: Sequence[Condition], generation: int | None, now: datetime
) -> list[Condition]:
    """The conditions with `Ready`, `Reconciling` and `Stalled` recomputed from the stages, set
    for the newest generation seen (a step of an older one does not move them back)."""
    ready = ready_of(conditions)
    newest = _newest_generation(conditions)
    if generation is not None and (newest is None or generation > newest):
        newest = generation
    items = list(conditions)
    for update in (ready, *kstatus_of(ready)):
        items = set_condition(items, update, newest, now)
    return items


def _newest_generation(conditions: Sequence[Condition]) -> int | None:
    seen = [c.observed_generation for c in conditions if c.type in STAGES]
    return max((g for g in seen if g is not None), default=None)


def _ordered(conditions: list[Condition]) -> list[Condition]:
    return sorted(conditions, key=lambda c: (_ORDER.get(c.type, len(_ORDER)), c.type))


#: Where each condition type goes in the list: the summary ones first, then the stages.
_ORDER = {str(name): i for i, name in enumerate((*SUMMARY, *STAGES))}


@dataclass(frozen=True)
class Transition:
    """A condition whose status changed, or whose reason changed while it reports a problem
    (not True; for `Reconciling` and `Stalled`, True): logged, and but for those two an Event."""

    type: str
    ok: bool | None
    reason: str
    message: str


class ConditionSet:
    """The conditions of one FlowExport, with `Ready` kept in step with the stages."""

    def __init__(self, conditions: Iterable[Condition] = ()) -> None:
        self.items: list[Condition] = list(conditions)

    def get(self, type_: str) -> Condition | None:
        """The condition of this type, if set."""
        return next((c for c in self.items if c.type == type_), None)

    def apply(self, updates: Iterable[ConditionUpdate], generation: int | None) -> list[Transition]:
        """Apply the updates (then `Ready`, `Reconciling`, `Stalled`); the transitions."""
        before = {c.type: (c.status, c.reason) for c in self.items}
        now = datetime.now(UTC)
        for update in updates:
            self.items = set_condition(self.items, update, generation, now)
        self.items = with_ready(self.items, generation, now)
        changed = []
        for c in self.items:
            # An abnormal-true condition not yet set counts as False (as kstatus reads it).
            absent = ("False", None) if c.type in ABNORMAL_TRUE else (None, None)
            status, reason = before.get(c.type, absent)
            problem = (c.status == "True") == (c.type in ABNORMAL_TRUE)
            if status != c.status or (problem and reason != c.reason):
                state = None if c.status == "Unknown" else c.status == "True"
                changed.append(Transition(c.type, state, c.reason, c.message))
        return changed
