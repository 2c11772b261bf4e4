"""Conditions and status for a FlowExport, computed from what the pipeline observed (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from flowexport.api.models import Condition

STAGES = ("SubscriptionReady", "PCEReachable", "Ingesting")


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    ok: bool | None,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """Conditions with `type_` set; its transition time moves only when its status changes."""
    status = "Unknown" if ok is None else ("True" if ok else "False")
    previous = next((c for c in conditions if c.type == type_), None)
    since = previous.last_transition_time if previous and previous.status == status else now
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message[:32768],
        last_transition_time=since,
        observed_generation=generation,
    )
    others = [c for c in conditions if c.type != type_]
    return _ordered([*others, updated])


def with_ready(
    conditions: Sequence[Condition], generation: int | None, now: datetime
) -> list[Condition]:
    """Add `Ready`: True when every stage is True, else the first stage that is not."""
    by_type = {c.type: c for c in conditions}
    for stage in STAGES:
        condition = by_type.get(stage)
        if condition is None:
            return set_condition(
                conditions, "Ready", None, "Pending", f"{stage} not yet known", generation, now
            )
        if condition.status != "True":
            ok = None if condition.status == "Unknown" else False
            return set_condition(
                conditions, "Ready", ok, condition.reason, condition.message, generation, now
            )
    return set_condition(conditions, "Ready", True, "Ready", "exporting flows", generation, now)


def _ordered(conditions: list[Condition]) -> list[Condition]:
    order = {name: i for i, name in enumerate(("Ready", *STAGES))}
    return sorted(conditions, key=lambda c: (order.get(c.type, len(order)), c.type))
