"""A FlowExport's conditions as a front end holds them: updates applied, transitions found.

Both front ends keep their conditions here (the operator's `StatusBoard`, `sync`'s state), so
`Ready`, `Reconciling`, `Stalled` and the transition rules are computed once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from flowexport.api.conditions import ABNORMAL_TRUE, ConditionUpdate, set_condition, with_ready
from flowexport.api.models import Condition


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
