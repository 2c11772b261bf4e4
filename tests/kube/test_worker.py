"""The ingestion worker in-process: ingest into status, suspend, spec edits, restart from the
status cursor, a log group deleted under it, clean-up per deletion policy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import kopf
import pytest

from flowexport.kube import worker
from flowexport.kube.cleanup import clean_up
from flowexport.kube.reconcile import reconcile, resync
from flowexport.kube.state import Export
from flowexport.kube.worker import work
from flowexport.secrets import SecretKind
from tests.kube.conftest import NS, World
from tests.kube.fakes import Stopped, operator
from tests.pcesim import API_KEY, API_SECRET

PCE = SecretKind.PCE_CREDENTIALS


async def eventually(check: Callable[[], bool], what: str = "", timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def running(world: World, export: Export, body: dict[str, Any]) -> AsyncIterator[Stopped]:
    """The worker as kopf runs it, stopped (and awaited) on exit."""
    stopped = Stopped()
    task = asyncio.create_task(work(world.op, export, body, stopped))
    try:
        yield stopped
    finally:
        stopped.set()
        await asyncio.wait_for(task, timeout=30)


def uploaded(world: World) -> int:
    return int(world.status().get("counts", {}).get("flowsUploaded", 0))


async def test_the_worker_ingests_and_writes_counts_cursor_and_ready(world: World) -> None:
    body = world.body()
    export = world.export()
    await reconcile(world.op, export, body)
    async with running(world, export, body):
        await eventually(lambda: world.condition("Ready") == ("True", "Ready"), "Ready")
        world.write_flows(25)
        await eventually(lambda: len(world.received()) == 25, "25 flows at the PCE")
    status = world.status()
    assert status["counts"]["recordsRead"] == 25 and uploaded(world) == 25
    assert status["cursor"]["ingestedThrough"] > 0
    assert status["lastUploadTime"].endswith("Z")
    assert world.condition("Ingesting") == ("True", "Ingesting")
    assert "Ready" in world.events.reasons("Normal")


async def test_suspend_and_resume(world: World) -> None:
    body = world.body()
    export = world.export()
    await reconcile(world.op, export, body)
    async with running(world, export, body):
        await eventually(lambda: world.condition("Ingesting") == ("True", "Ingesting"))
        body["spec"]["suspend"] = True
        body["metadata"]["generation"] = 2
        await reconcile(world.op, export, body)
        await eventually(lambda: world.condition("Ingesting") == ("False", "Suspended"))
        assert world.condition("Ready") == ("False", "Suspended")
        world.write_flows(5)
        await asyncio.sleep(1.5)
        assert world.received() == []
        body["spec"]["suspend"] = False
        body["metadata"]["generation"] = 3
        await reconcile(world.op, export, body)
        await eventually(lambda: len(world.received()) == 5, "flows after resume")


async def test_a_spec_edit_restarts_the_worker_with_new_settings(world: World) -> None:
    body = world.body()
    export = world.export()
    await reconcile(world.op, export, body)
    async with running(world, export, body):
        await eventually(lambda: world.condition("Ingesting") == ("True", "Ingesting"))
        world.write_flows(3, action="REJECT")
        await asyncio.sleep(1.5)
        assert world.received() == []  # REJECT records are filtered by default
        body["spec"]["ingestion"]["actions"] = ["ACCEPT", "REJECT"]
        body["metadata"]["generation"] = 2
        await reconcile(world.op, export, body)
        # Records ingested before the worker restarts are read with the old settings.
        await eventually(lambda: not export.restart.is_set(), "the worker restarted")
        world.write_flows(3, start=10, action="REJECT")
        await eventually(lambda: len(world.received()) == 3, "REJECT flows after the edit")
    assert world.status()["observedGeneration"] == 2


async def test_a_new_operator_resumes_from_the_status_cursor(world: World) -> None:
    body = world.body()
    export = world.export()
    await reconcile(world.op, export, body)
    async with running(world, export, body):
        await eventually(lambda: world.condition("Ingesting") == ("True", "Ingesting"))
        world.write_flows(10)
        await eventually(lambda: uploaded(world) == 10, "10 flows in status")
    world.write_flows(10, start=10)
    world.op = operator(
        world.kube, world.events, allowed_pce_urls=[world.pce.url]
    )  # a restarted process: memory is gone
    export = world.export()
    assert export.board.progress is not None
    await reconcile(world.op, export, body)
    async with running(world, export, body):
        await eventually(lambda: len({f[0] for f in world.received()}) == 20, "all 20 flows")
        await asyncio.sleep(0.5)
    assert len(world.received()) - 20 <= 10, "at most one batch uploaded twice"
    assert world.status()["counts"]["recordsRead"] >= 20


async def test_a_log_group_deleted_under_the_worker_is_reported_and_reconciled(
    world: World,
) -> None:
    body = world.body()
    export = world.export()
    await reconcile(world.op, export, body)
    async with running(world, export, body):
        await eventually(lambda: world.condition("Ingesting") == ("True", "Ingesting"))
        world.cloud.clients.logs.delete_log_group(logGroupName="/flowexport/prod")
        await eventually(
            lambda: world.condition("Ingesting") == ("False", "LogGroupNotFound"), timeout=30
        )
        assert export.due  # the next timer tick reconciles: the group comes back
        await reconcile(world.op, export, body)
        await eventually(lambda: world.condition("Ingesting") == ("True", "Ingesting"))
        world.write_flows(4)
        await eventually(lambda: len(world.received()) == 4, "flows after the repair")


async def test_delete_removes_what_it_created(world: World) -> None:
    body = world.body()
    await reconcile(world.op, world.export(), body)
    await clean_up(world.op, body)
    assert world.cloud.clients.ec2.describe_flow_logs()["FlowLogs"] == []
    groups = world.cloud.clients.logs.describe_log_groups(logGroupNamePrefix="/flowexport/prod")
    assert groups["logGroups"] == []
    assert "Deleted" in world.events.reasons("Normal")
    assert (NS, "prod") not in world.op.exports


async def test_retain_policy_keeps_aws_resources(world: World) -> None:
    body = world.body(deletionPolicy="Retain")
    await reconcile(world.op, world.export(), body)
    await clean_up(world.op, body)
    assert len(world.cloud.clients.ec2.describe_flow_logs()["FlowLogs"]) == 1


async def test_a_clean_up_that_cannot_reach_aws_says_why_and_is_retried(world: World) -> None:
    body = world.body()
    await reconcile(world.op, world.export(), body)
    world.kube.delete_secret(NS, "aws-keys")
    with pytest.raises(kopf.TemporaryError):
        await clean_up(world.op, body)
    assert "SecretNotFound" in world.events.reasons("Warning")
    assert len(world.cloud.clients.ec2.describe_flow_logs()["FlowLogs"]) == 1


async def test_a_missing_secret_recovers_once_created(world: World) -> None:
    world.kube.delete_secret(NS, "pce-key")
    export = world.export()
    body = world.body()
    await reconcile(world.op, export, body)
    assert world.condition("PCEReachable") == ("False", "SecretNotFound")
    assert world.condition("Ready") == ("False", "SecretNotFound")
    assert export.secret_versions["pce-key"] == ""
    assert not await resync(world.op, export, body)  # not due, nothing changed
    world.kube.put_secret(NS, "pce-key", {"username": API_KEY, "password": API_SECRET}, PCE)
    # Noticed by the Secret check, well before the 10-minute retry of a terminal problem.
    assert await resync(world.op, export, body)
    assert world.condition("PCEReachable") == ("True", "Reachable")
    async with running(world, export, body):
        await eventually(lambda: world.condition("Ready") == ("True", "Ready"), "Ready")
        world.write_flows(3)
        await eventually(lambda: len(world.received()) == 3, "flows with the new Secret")


async def test_drift_is_repaired_by_the_next_due_reconcile(world: World) -> None:
    export = world.export()
    body = world.body()
    await reconcile(world.op, export, body)
    ec2, logs = world.cloud.clients.ec2, world.cloud.clients.logs
    async with running(world, export, body):
        await eventually(lambda: world.condition("Ready") == ("True", "Ready"), "Ready")
        first = world.status()["flowLogId"]
        ec2.delete_flow_logs(FlowLogIds=[first])
        logs.put_retention_policy(logGroupName="/flowexport/prod", retentionInDays=30)
        export.request_reconcile()  # the resync period has passed
        assert await resync(world.op, export, body)
        flow_logs = ec2.describe_flow_logs()["FlowLogs"]
        assert len(flow_logs) == 1
        assert world.status()["flowLogId"] == flow_logs[0]["FlowLogId"] != first
        group = logs.describe_log_groups(logGroupNamePrefix="/flowexport/prod")["logGroups"][0]
        assert group["retentionInDays"] == 7
        assert world.condition("SubscriptionReady") == ("True", "Subscribed")
        await eventually(lambda: world.condition("Ready") == ("True", "Ready"), "Ready again")
        # Ingestion goes on with the new flow log.
        world.write_flows(4)
        await eventually(lambda: len(world.received()) == 4, "flows after the repair")


async def test_a_worker_is_started_once_and_rebuilt_only_when_a_secret_really_changes(
    world: World, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level("INFO", logger="flowexport.operator")
    # The worker looks for its subscription often, so it starts while the reconcile is still
    # probing the PCE (as under a busy event loop).
    monkeypatch.setattr(worker, "WAKE_SECONDS", 0.01)
    export = world.export()
    body = world.body()

    def rebuilt() -> int:
        return caplog.text.count("ingestion pipeline stopped")

    # As kopf runs them: the daemon starts alongside the first reconcile, not after it.
    async with running(world, export, body):
        await reconcile(world.op, export, body)
        await eventually(lambda: world.condition("Ready") == ("True", "Ready"), "Ready")
        export.request_reconcile()
        assert await resync(world.op, export, body)  # a due reconcile, nothing changed
        world.write_flows(3)
        await eventually(lambda: len(world.received()) == 3, "flows")
        assert rebuilt() == 0, "the first reconcile or a resync rebuilt the worker"
        rotated = {"username": API_KEY, "password": API_SECRET, "rotated": "yes"}
        world.kube.put_secret(NS, "pce-key", rotated, PCE)
        assert await resync(world.op, export, body)  # the Secret's version moved
        await eventually(lambda: rebuilt() == 1, "the worker rebuilt with the new Secret")
        world.write_flows(2, start=3)
        await eventually(lambda: len(world.received()) == 5, "flows after the rebuild")
