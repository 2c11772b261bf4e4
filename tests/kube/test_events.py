"""Events: reported by the operator (not kopf/dev), one per condition transition, none for the
kstatus conditions (`Reconciling`, `Stalled`), which only restate `Ready`."""

from __future__ import annotations

import logging
import socket
from typing import Any

import kopf
import pytest
from kopf._cogs.clients import events as kopf_events
from kopf._cogs.structs import references

from flowexport.api.conditions import ConditionSet, ConditionType, ConditionUpdate
from flowexport.errors import Reason
from flowexport.kube.events import REPORTING_COMPONENT, announce
from flowexport.kube.handlers import configure
from flowexport.kube.reconcile import reconcile
from flowexport.secrets import SecretKind
from tests.kube.conftest import NS, World
from tests.kube.fakes import FakeKube, RecordingEvents, body, operator
from tests.pcesim import API_KEY

BODY = body(NS, "prod", {})
SUBSCRIBED = ConditionUpdate(ConditionType.SUBSCRIPTION_READY, True, Reason.SUBSCRIBED, "fl-1")
REACHABLE = ConditionUpdate(ConditionType.PCE_REACHABLE, True, Reason.REACHABLE, "ok")
INGESTING = ConditionUpdate(ConditionType.INGESTING, True, Reason.INGESTING, "caught up")
WORKLOADS_OFF = ConditionUpdate(ConditionType.WORKLOADS_SYNCED, True, Reason.DISABLED, "off")


def _down(reason: Reason) -> ConditionUpdate:
    return ConditionUpdate(ConditionType.PCE_REACHABLE, False, reason, f"PCE says {reason}")


async def test_events_are_reported_by_the_operator_and_its_pod(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = kopf.OperatorSettings()
    memo = kopf.Memo()
    memo.operator = operator(FakeKube(), RecordingEvents())
    await configure(settings=settings, memo=memo)
    posted: list[dict[str, Any]] = []

    async def post(**kwargs: Any) -> None:
        posted.append(kwargs["payload"])

    # What kopf's poster sends for a kopf.info()/kopf.warn() made with these settings.
    monkeypatch.setattr(kopf_events.api, "post", post)
    await kopf_events.post_event(
        ref={"apiVersion": "flowexport.io/v1alpha1", "kind": "FlowExport", "namespace": NS},
        type="Normal",
        reason="Ready",
        message="exporting flows",
        resource=references.Resource(group="", version="v1", plural="events", namespaced=True),
        settings=settings,
        logger=logging.getLogger("test"),
    )
    (event,) = posted
    assert event["reportingComponent"] == REPORTING_COMPONENT == "flowexport-operator"
    assert event["source"] == {"component": "flowexport-operator"}
    assert event["reportingInstance"] == socket.gethostname()
    assert event["metadata"]["generateName"].startswith("flowexport-operator-")


def _ready_events(events: RecordingEvents) -> list[tuple[str, str]]:
    return [
        (kind, reason)
        for kind, reason, message in events.posted
        if (kind == "Normal" and reason == "Ready") or message.startswith("Ready: ")
    ]


def test_ready_flipping_posts_one_event_per_flip_and_repeats_post_nothing() -> None:
    conditions, events = ConditionSet(), RecordingEvents()
    steps = [
        [SUBSCRIBED, REACHABLE, WORKLOADS_OFF, INGESTING],
        [SUBSCRIBED, REACHABLE, WORKLOADS_OFF, INGESTING],
        [_down(Reason.PCE_UNAVAILABLE)],
        [_down(Reason.PCE_UNAVAILABLE)],
        [REACHABLE],
        [REACHABLE],
    ]
    counts = []
    for updates in steps:
        announce(events, BODY, conditions.apply(updates, 1))
        counts.append(len(events.posted))
    assert _ready_events(events) == [
        ("Normal", "Ready"),
        ("Warning", "PCEUnavailable"),
        ("Normal", "Ready"),
    ]
    assert counts[1] == counts[0] and counts[3] == counts[2] and counts[5] == counts[4]
    assert not any(m.startswith(("Reconciling", "Stalled")) for _, _, m in events.posted)
    warnings = [(r, m) for t, r, m in events.posted if t == "Warning"]
    assert warnings == [
        ("PCEUnavailable", "Ready: PCE says PCEUnavailable"),
        ("PCEUnavailable", "PCEReachable: PCE says PCEUnavailable"),
    ]


def test_reconciling_and_stalled_transitions_are_logged_not_posted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    conditions, events = ConditionSet(), RecordingEvents()
    caplog.set_level(logging.INFO, logger="flowexport.operator")
    changes = conditions.apply(
        [SUBSCRIBED, _down(Reason.PCE_UNAUTHORIZED), WORKLOADS_OFF, INGESTING], 1
    )
    assert ("Stalled", True) in {(c.type, c.ok) for c in changes}
    announce(events, BODY, changes)
    assert "security/prod: Stalled=True (PCEUnauthorized)" in caplog.text
    assert not any(m.startswith(("Stalled", "Reconciling")) for _, _, m in events.posted)
    assert [t for t, _, _ in events.posted].count("Warning") == 2  # the stage and Ready
    # A terminal reason replacing another is a transition of Stalled (True) too: logged.
    moved = conditions.apply([_down(Reason.PCE_FORBIDDEN)], 1)
    assert ("Stalled", True, "PCEForbidden") in {(c.type, c.ok, c.reason) for c in moved}
    # Reconciling, False all along, moving from one reason to another is no transition.
    assert "Reconciling" not in {c.type for c in moved}


def test_reconciling_and_stalled_appearing_false_are_no_transition() -> None:
    changes = ConditionSet().apply([SUBSCRIBED, REACHABLE, WORKLOADS_OFF, INGESTING], 1)
    assert {c.type for c in changes} == {
        "Ready",
        "SubscriptionReady",
        "PCEReachable",
        "WorkloadsSynced",
        "Ingesting",
    }


async def test_a_real_reconcile_posts_each_transition_once(world: World) -> None:
    world.kube.put_secret(
        NS, "pce-key", {"username": API_KEY, "password": "wrong"}, SecretKind.PCE_CREDENTIALS
    )
    export = world.export()
    await reconcile(world.op, export, world.body())
    assert world.condition("Stalled") == ("True", "PCEUnauthorized")
    warnings = sorted(m.split(":")[0] for t, _, m in world.events.posted if t == "Warning")
    assert warnings == ["PCEReachable", "Ready"]
    posted = len(world.events.posted)
    await reconcile(world.op, export, world.body())
    assert len(world.events.posted) == posted
