"""Condition types and reasons: one enum, documented member by member, equal to the docs'
table, used everywhere instead of string literals; Ready computed from the stages."""

from __future__ import annotations

import ast
import inspect
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flowexport import errors
from flowexport.api import conditions
from flowexport.api.conditions import (
    STAGES,
    SUMMARY,
    ConditionType,
    ConditionUpdate,
    kstatus_of,
    ready_of,
    set_condition,
    with_ready,
)
from flowexport.api.models import Condition, FlowExportStatus
from flowexport.errors import Reason

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "flowexport"
NOW = datetime(2026, 11, 24, tzinfo=UTC)


def _kind(reason: Reason) -> str:
    if not reason.is_error:
        return "ok"
    return "retryable" if reason.retryable else "terminal"


def test_the_docs_reason_table_equals_the_enum() -> None:
    text = (ROOT / "docs" / "conditions.md").read_text()
    rows = re.findall(r"^\| `([A-Za-z]+)` \| [^|]+ \| (ok|retryable|terminal) \|", text, re.M)
    assert rows == [(str(r), _kind(r)) for r in Reason]


def test_every_condition_type_is_named_in_the_docs_and_the_schema() -> None:
    docs = (ROOT / "docs" / "conditions.md").read_text().split("## Reasons", 1)[0]
    status = (ROOT / "docs" / "operator.md").read_text().split("## Status", 1)[1]
    status = status.split("\n## ", 1)[0]
    type_field = Condition.model_fields["type"].description or ""
    listed = FlowExportStatus.model_fields["conditions"].description or ""
    for member in ConditionType:
        assert f"`{member}`" in docs, f"docs/conditions.md does not name {member}"
        assert f"`{member}`" in status, f"docs/operator.md#status does not name {member}"
        assert member in type_field and member in listed, member


def test_every_member_has_a_comment_saying_when_and_whether_terminal() -> None:
    for enum, module in ((ConditionType, conditions), (Reason, errors)):
        lines = inspect.getsource(module).splitlines()
        for member in enum:
            index = next(i for i, x in enumerate(lines) if re.match(rf"    {member.name} = ", x))
            comment = lines[index - 1].strip()
            assert comment.startswith("# "), f"{enum.__name__}.{member.name} has no comment"
            if enum is Reason and member.is_error:
                word = "Retryable." if member.retryable else "Terminal."
                assert comment.endswith(word), f"{member.name}: {comment!r} should say {word}"


# Literals that are not conditions: AWS's own error code, the CRD printer column's header.
_NOT_CONDITIONS = {
    ("aws/errors.py", "InternalError"),
    ("api/crd.py", "Ready"),
    ("api/grants.py", "Ready"),
}


def test_no_condition_type_or_reason_is_spelled_as_a_string_outside_the_enum() -> None:
    names = {str(v) for v in ConditionType} | {str(v) for v in Reason}
    found = []
    for path in PACKAGE.rglob("*.py"):
        where = path.relative_to(PACKAGE).as_posix()
        if where in ("api/conditions.py", "errors.py") or where.startswith("sim/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            literal = isinstance(node, ast.Constant) and node.value in names
            if literal and (where, node.value) not in _NOT_CONDITIONS:
                found.append(f"{where}:{node.lineno} {node.value!r}")
    assert found == []


def _stage(type_: ConditionType, ok: bool | None, reason: Reason) -> ConditionUpdate:
    return ConditionUpdate(type_, ok, reason, f"{type_} {reason}")


def _apply(*updates: ConditionUpdate) -> list[Condition]:
    items: list[Condition] = []
    for update in updates:
        items = set_condition(items, update, 3, NOW)
    return with_ready(items, 3, NOW)


def test_ready_is_true_only_when_every_stage_is() -> None:
    ok = [_stage(t, True, Reason.READY) for t in STAGES]
    assert ready_of(_apply(*ok)).ok is True
    assert ready_of(_apply(*ok[:2])) == ConditionUpdate(
        ConditionType.READY, None, Reason.PENDING, "WorkloadsSynced not yet known"
    )
    assert ready_of(_apply(*ok[:3])) == ConditionUpdate(
        ConditionType.READY, None, Reason.PENDING, "Ingesting not yet known"
    )


def test_ready_takes_the_first_failing_stage_in_order() -> None:
    items = _apply(
        _stage(ConditionType.SUBSCRIPTION_READY, True, Reason.SUBSCRIBED),
        _stage(ConditionType.PCE_REACHABLE, False, Reason.PCE_UNAUTHORIZED),
        _stage(ConditionType.WORKLOADS_SYNCED, True, Reason.DISABLED),
        _stage(ConditionType.INGESTING, False, Reason.SUSPENDED),
    )
    ready = next(c for c in items if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "PCEUnauthorized")
    assert [c.type for c in items] == [*SUMMARY, *STAGES]
    assert SUMMARY[0] == "Ready"


def test_a_reason_from_an_older_version_is_pending_not_a_crash() -> None:
    stored = Condition(
        type="Ingesting", status="False", reason="IngestionFailed", last_transition_time=NOW
    )
    subscribed = _stage(ConditionType.SUBSCRIPTION_READY, True, Reason.SUBSCRIBED)
    reachable = _stage(ConditionType.PCE_REACHABLE, True, Reason.REACHABLE)
    items = set_condition(set_condition([stored], subscribed, 1, NOW), reachable, 1, NOW)
    assert ready_of(items).reason is Reason.PENDING


def test_the_transition_time_moves_only_with_the_status() -> None:
    update = _stage(ConditionType.INGESTING, False, Reason.AWS_THROTTLED)
    first = set_condition([], update, 1, NOW)
    later = datetime(2026, 11, 25, tzinfo=UTC)
    again = set_condition(
        first, _stage(ConditionType.INGESTING, False, Reason.PCE_UNAVAILABLE), 1, later
    )
    assert again[0].last_transition_time == NOW
    turned = set_condition(again, _stage(ConditionType.INGESTING, True, Reason.INGESTING), 1, later)
    assert turned[0].last_transition_time == later


@pytest.mark.parametrize("reason", list(Reason))
def test_every_reason_is_a_valid_condition_reason(reason: Reason) -> None:
    Condition(type="Ready", status="False", reason=str(reason), last_transition_time=NOW)


def _state(items: list[Condition]) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in items if c.type in SUMMARY}


def _all_ok() -> list[ConditionUpdate]:
    return [
        _stage(ConditionType.SUBSCRIPTION_READY, True, Reason.SUBSCRIBED),
        _stage(ConditionType.PCE_REACHABLE, True, Reason.REACHABLE),
        _stage(ConditionType.WORKLOADS_SYNCED, True, Reason.SYNCED),
        _stage(ConditionType.INGESTING, True, Reason.INGESTING),
    ]


def test_healthy_means_reconciling_and_stalled_false_not_absent() -> None:
    assert _state(_apply(*_all_ok())) == {
        "Ready": ("True", "Ready"),
        "Reconciling": ("False", "Ready"),
        "Stalled": ("False", "Ready"),
    }


def test_a_terminal_failure_stalls_with_the_stage_reason_and_message() -> None:
    items = _apply(
        _stage(ConditionType.SUBSCRIPTION_READY, True, Reason.SUBSCRIBED),
        _stage(ConditionType.PCE_REACHABLE, False, Reason.PCE_UNAUTHORIZED),
    )
    assert _state(items) == {
        "Ready": ("False", "PCEUnauthorized"),
        "Reconciling": ("False", "PCEUnauthorized"),
        "Stalled": ("True", "PCEUnauthorized"),
    }
    stalled = next(c for c in items if c.type == "Stalled")
    assert stalled.message == "PCEReachable PCEUnauthorized"


def test_a_retryable_failure_and_a_stage_not_yet_known_are_reconciling() -> None:
    retrying = _apply(
        _stage(ConditionType.SUBSCRIPTION_READY, True, Reason.SUBSCRIBED),
        _stage(ConditionType.PCE_REACHABLE, False, Reason.PCE_UNAVAILABLE),
    )
    assert _state(retrying)["Reconciling"] == ("True", "PCEUnavailable")
    assert _state(retrying)["Stalled"] == ("False", "PCEUnavailable")
    pending = _apply(_stage(ConditionType.SUBSCRIPTION_READY, True, Reason.SUBSCRIBED))
    assert _state(pending) == {
        "Ready": ("Unknown", "Pending"),
        "Reconciling": ("True", "Pending"),
        "Stalled": ("False", "Pending"),
    }


def test_suspended_is_neither_reconciling_nor_stalled() -> None:
    ok = _all_ok()
    items = _apply(*ok[:3], _stage(ConditionType.INGESTING, False, Reason.SUSPENDED))
    assert _state(items) == {
        "Ready": ("False", "Suspended"),
        "Reconciling": ("False", "Suspended"),
        "Stalled": ("False", "Suspended"),
    }


@pytest.mark.parametrize("reason", list(Reason))
def test_stalled_is_exactly_a_terminal_reason_and_never_with_reconciling(reason: Reason) -> None:
    ready = ConditionUpdate(ConditionType.READY, False, reason, "m")
    reconciling, stalled = kstatus_of(ready)
    assert stalled.ok is (_kind(reason) == "terminal")
    # A False Ready that is neither terminal nor a suspension is worked on (or retried).
    assert reconciling.ok is (_kind(reason) != "terminal" and reason is not Reason.SUSPENDED)
    assert not (reconciling.ok and stalled.ok)
    assert (reconciling.reason, stalled.reason) == (reason, reason)


def test_a_stage_not_yet_evaluated_for_a_new_generation_is_reconciling() -> None:
    items: list[Condition] = []
    for update in _all_ok():
        items = set_condition(items, update, 1, NOW)
    items = with_ready(items, 1, NOW)
    assert _state(items)["Ready"] == ("True", "Ready")
    # The reconcile of generation 2 has run; the worker has not restarted yet.
    for update in _all_ok()[:3]:
        items = set_condition(items, update, 2, NOW)
    items = with_ready(items, 2, NOW)
    ready = next(c for c in items if c.type == "Ready")
    assert (ready.status, ready.message) == (
        "Unknown",
        "Ingesting not yet evaluated for generation 2",
    )
    assert _state(items)["Reconciling"] == ("True", "Pending")
    # The old worker reports once more, for generation 1: still not the new generation's word,
    # and the summary keeps generation 2.
    items = with_ready(set_condition(items, _all_ok()[3], 1, NOW), 1, NOW)
    assert _state(items)["Ready"] == ("Unknown", "Pending")
    assert {c.observed_generation for c in items if c.type in SUMMARY} == {2}
    failed = _stage(ConditionType.INGESTING, False, Reason.PCE_UNAUTHORIZED)
    items = with_ready(set_condition(items, failed, 1, NOW), 1, NOW)
    assert _state(items)["Stalled"] == ("False", "Pending"), "an old failure is re-evaluated"
    items = with_ready(set_condition(items, _all_ok()[3], 2, NOW), 2, NOW)
    assert _state(items)["Ready"] == ("True", "Ready")
