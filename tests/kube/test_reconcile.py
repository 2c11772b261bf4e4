"""Reconcile in-process: subscription and probe reported as conditions, Events and a schedule;
invalid specs, bad and missing Secrets, drift repair and Secret changes (the resync timer)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from flowexport import lifecycle
from flowexport.api.validation import SpecError
from flowexport.kube.reconcile import reconcile, resync
from flowexport.kube.state import TERMINAL_RETRY_SECONDS
from flowexport.secrets import SecretKind
from tests.kube.conftest import NS, World
from tests.pcesim import API_KEY

PCE = SecretKind.PCE_CREDENTIALS


async def test_reconcile_subscribes_probes_and_schedules_a_resync(world: World) -> None:
    export = world.export()
    await reconcile(world.op, export, world.body())
    assert world.condition("SubscriptionReady") == ("True", "Subscribed")
    assert world.condition("PCEReachable") == ("True", "Reachable")
    assert world.condition("Ready") == ("Unknown", "Pending")  # the worker has not run yet
    status = world.status()
    assert status["flowLogId"].startswith("fl-")
    assert status["logGroupArn"].endswith(":log-group:/flowexport/prod")
    assert status["observedGeneration"] == 1
    assert "SubscriptionChanged" in world.events.reasons("Normal")
    assert export.subscription is not None and export.subscribed_generation == 1
    assert export.restart.is_set()
    assert set(export.secret_versions) == {"aws-keys", "pce-key"}
    assert not export.due  # next: the resync period
    assert export.next_reconcile - time.monotonic() > 250


async def test_a_second_reconcile_changes_nothing_and_restarts_nothing(world: World) -> None:
    export = world.export()
    await reconcile(world.op, export, world.body())
    export.restart.clear()
    posted = len(world.events.posted)
    await reconcile(world.op, export, world.body())
    assert not export.restart.is_set()
    assert len(world.events.posted) == posted


async def test_an_invalid_spec_is_reported_and_never_retried(world: World) -> None:
    export = world.export("bad-url")
    with pytest.raises(SpecError):
        await reconcile(
            world.op, export, world.body("bad-url", **{"pce.url": "http://pce.example.com"})
        )
    assert world.condition("SubscriptionReady", "bad-url") == ("False", "InvalidSpec")
    assert world.condition("Ready", "bad-url") == ("False", "InvalidSpec")
    assert export.next_reconcile == float("inf")
    assert world.cloud.clients.ec2.describe_flow_logs()["FlowLogs"] == []


async def test_a_wrong_key_is_reported_without_the_secret(world: World) -> None:
    world.kube.put_secret(NS, "pce-key", {"username": API_KEY, "password": "wrong"}, PCE)
    export = world.export()
    await reconcile(world.op, export, world.body())
    assert world.condition("PCEReachable") == ("False", "PCEUnauthorized")
    assert world.condition("Ready") == ("False", "PCEUnauthorized")
    assert "PCEUnauthorized" in world.events.reasons("Warning")
    assert all("wrong" not in message for _, _, message in world.events.posted)
    assert all("wrong" not in str(patch) for patch in world.kube.patches)
    assert export.next_reconcile - time.monotonic() > TERMINAL_RETRY_SECONDS - 5


async def test_missing_aws_keys_are_reported_on_the_subscription(world: World) -> None:
    world.kube.delete_secret(NS, "aws-keys")
    await reconcile(world.op, world.export(), world.body())
    assert world.condition("SubscriptionReady") == ("False", "SecretNotFound")
    message = next(m for t, r, m in world.events.posted if r == "SecretNotFound")
    assert f"Secret {NS}/aws-keys does not exist" in message


async def test_incomplete_keys_name_the_keys_needed(world: World) -> None:
    world.kube.put_secret(NS, "pce-key", {"username": API_KEY}, PCE)
    await reconcile(world.op, world.export(), world.body())
    assert world.condition("PCEReachable") == ("False", "SecretInvalid")


async def test_a_conflicting_flow_log_is_terminal_and_named(world: World) -> None:
    world.cloud.clients.logs.create_log_group(logGroupName="/flowexport/prod")
    world.cloud.clients.ec2.create_flow_logs(
        ResourceIds=[world.cloud.vpc_id],
        ResourceType="VPC",
        TrafficType="ALL",
        LogDestinationType="cloud-watch-logs",
        LogGroupName="/flowexport/prod",
        DeliverLogsPermissionArn=world.cloud.role_arn,
        MaxAggregationInterval=600,
    )
    export = world.export()
    await reconcile(world.op, export, world.body(**{"aws.maxAggregationInterval": 60}))
    assert world.condition("SubscriptionReady") == ("False", "FlowLogConflict")
    assert export.next_reconcile - time.monotonic() > TERMINAL_RETRY_SECONDS - 5
    assert world.condition("PCEReachable") is None  # not probed while not subscribed


async def test_an_unexpected_error_is_reported_as_internal_and_retried(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise KeyError("api_secret_in_a_bug")

    monkeypatch.setattr(lifecycle, "ensure_subscription", broken)
    export = world.export()
    await reconcile(world.op, export, world.body())
    assert world.condition("SubscriptionReady") == ("False", "InternalError")
    message = next(m for _, r, m in world.events.posted if r == "InternalError")
    assert "KeyError" in message and "api_secret_in_a_bug" not in message
    assert export.next_reconcile - time.monotonic() < 60  # retried with backoff, not waited out


async def test_the_resync_leaves_a_reconcile_in_flight_alone(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first reconcile slower than the timer's tick (hundreds starting at once): the timer
    finds the FlowExport due, but the create handler's reconcile is still in flight and
    schedules the next itself; the timer does not queue a second one behind it."""
    subscribe = lifecycle.subscribe
    entered, release = asyncio.Event(), asyncio.Event()
    calls: list[object] = []

    async def held(*args: Any) -> Any:
        calls.append(args)
        entered.set()
        await release.wait()
        return await subscribe(*args)

    monkeypatch.setattr(lifecycle, "subscribe", held)
    export = world.export()
    body = world.body()
    first = asyncio.create_task(reconcile(world.op, export, body))
    await asyncio.wait_for(entered.wait(), 30)
    assert export.due  # nothing scheduled yet: the timer would have reconciled
    tick = asyncio.create_task(resync(world.op, export, body))
    await asyncio.sleep(0)
    release.set()
    await asyncio.wait_for(first, 60)
    assert await asyncio.wait_for(tick, 60) is False
    assert len(calls) == 1
    assert world.condition("SubscriptionReady") == ("True", "Subscribed")
    assert not await resync(world.op, export, body)  # the reconcile scheduled the next
    assert len(calls) == 1


async def test_reconciles_take_turns_past_the_bound(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five FlowExports applied at once with room for two reconciles: two call AWS, the others
    wait their turn (no thread each), and every one is reconciled in the end."""
    world.op.reconciling = asyncio.Semaphore(2)
    subscribe = lifecycle.subscribe
    release = asyncio.Event()
    inside: list[str] = []
    peak = 0

    async def held(spec: Any, owner: Any, secrets: Any) -> Any:
        nonlocal peak
        inside.append(str(owner))
        peak = max(peak, len(inside))
        await release.wait()
        try:
            return await subscribe(spec, owner, secrets)
        finally:
            inside.remove(str(owner))

    monkeypatch.setattr(lifecycle, "subscribe", held)
    names = [f"vpc-{i}" for i in range(5)]
    bodies = {n: world.body(n, **{"aws.logGroupName": f"/flowexport/{n}"}) for n in names}
    tasks = [asyncio.create_task(reconcile(world.op, world.export(n), bodies[n])) for n in names]
    for _ in range(3000):  # every task gets as far as it can (a bounded wait, not a timing)
        if len(inside) >= 2:
            break
        await asyncio.sleep(0.01)
    for _ in range(100):
        await asyncio.sleep(0)
    assert len(inside) == 2, "more than the bound called AWS at once"
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    assert peak == 2
    assert all(world.condition("SubscriptionReady", n) is not None for n in names)
