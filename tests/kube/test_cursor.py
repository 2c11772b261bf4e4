"""A cursor lost from status (issue 23, item 3), in-process: the mark a saved cursor leaves,
CursorLost instead of startFrom after a restart, the user's flowexport.io/resume-from (applied,
refused, ignored), and a status wiped under a running worker written back whole."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from flowexport.kube.cursor import CURSOR_MARK, RESUME_FROM
from flowexport.kube.reconcile import reconcile, resync
from tests.kube.conftest import NS, World
from tests.kube.fakes import LiveBody, operator
from tests.kube.test_worker import eventually, running, uploaded


def live(world: World, **spec: object) -> LiveBody:
    return LiveBody(world.kube, world.body(**{"ingestion.startFrom": "earliest", **spec}))


def annotations(world: World) -> dict[str, str]:
    return world.kube.annotations.get((NS, "prod"), {})


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


async def ingest_10_and_stop(world: World, body: LiveBody) -> None:
    export = world.op.export(NS, "prod", body["status"], body)
    await reconcile(world.op, export, body)
    async with running(world, export, body):
        await eventually(lambda: world.condition("Ready") == ("True", "Ready"), "Ready")
        world.write_flows(10)
        await eventually(lambda: uploaded(world) == 10, "10 flows in status")


async def test_a_saved_cursor_marks_the_flowexport(world: World) -> None:
    body = live(world)
    await ingest_10_and_stop(world, body)
    assert CURSOR_MARK in annotations(world)
    marked = annotations(world)[CURSOR_MARK]
    await reconcile(world.op, world.op.export(NS, "prod", None, body), body)
    assert annotations(world)[CURSOR_MARK] == marked, "the mark is set once"


async def test_a_cursor_lost_while_stopped_waits_for_the_users_choice(world: World) -> None:
    body = live(world)
    await ingest_10_and_stop(world, body)
    world.kube.wipe_status(NS, "prod")
    between = time.time()
    await asyncio.sleep(1.1)
    world.write_flows(10, start=10)
    world.op = operator(world.kube, world.events, allowed_pce_urls=[world.pce.url])  # restarted
    export = world.op.export(NS, "prod", body["status"], body)
    await reconcile(world.op, export, body)
    assert world.condition("Ingesting") == ("False", "CursorLost")
    assert world.condition("Ready") == ("False", "CursorLost")
    assert world.condition("Stalled") == ("True", "CursorLost")
    assert "CursorLost" in world.events.reasons("Warning")
    assert "cursor" not in world.status()
    async with running(world, export, body):
        await asyncio.sleep(2)
        assert len(world.received()) == 10, "read without a cursor"
        world.kube.annotations[(NS, "prod")][RESUME_FROM] = "last tuesday"
        assert await resync(world.op, export, body)
        assert "ResumeFromInvalid" in world.events.reasons("Warning")
        assert world.condition("Ready") == ("False", "CursorLost")
        assert not await resync(world.op, export, body), "a refused value is not retried"
        world.kube.annotations[(NS, "prod")][RESUME_FROM] = rfc3339(between)
        assert await resync(world.op, export, body)
        await eventually(lambda: len(world.received()) == 20, "the 10 written meanwhile")
        await eventually(lambda: world.condition("Ready") == ("True", "Ready"), "Ready")
    assert len(world.received()) == 20, "flows repeated"
    assert RESUME_FROM not in annotations(world), "the annotation was not consumed"
    assert "CursorRestored" in world.events.reasons("Normal")
    assert world.status()["cursor"]["ingestedThrough"] > between * 1000


async def test_resume_from_with_the_cursor_intact_is_ignored_and_removed(world: World) -> None:
    body = live(world)
    await ingest_10_and_stop(world, body)
    cursor = world.status()["cursor"]
    world.kube.annotations[(NS, "prod")][RESUME_FROM] = "earliest"
    export = world.op.export(NS, "prod", None, body)
    assert await resync(world.op, export, body)
    assert RESUME_FROM not in annotations(world)
    assert "ResumeFromIgnored" in world.events.reasons("Warning")
    assert world.status()["cursor"] == cursor


async def test_a_new_flowexport_without_the_mark_starts_from_start_from(world: World) -> None:
    body = live(world, **{"ingestion.startFrom": "now"})
    export = world.op.export(NS, "prod", None, body)
    await reconcile(world.op, export, body)
    assert world.condition("Ingesting") is None
    assert world.status()["cursor"]["ingestedThrough"] > (time.time() - 60) * 1000


async def test_a_status_wiped_under_a_running_worker_is_written_back_whole(world: World) -> None:
    body = live(world)
    export = world.op.export(NS, "prod", None, body)
    await reconcile(world.op, export, body)
    async with running(world, export, body):
        await eventually(lambda: world.condition("Ready") == ("True", "Ready"), "Ready")
        world.write_flows(10)
        await eventually(lambda: uploaded(world) == 10, "10 flows in status")
        before = world.status()
        world.kube.wipe_status(NS, "prod")
        await eventually(lambda: world.condition("Ready") == ("True", "Ready"), "Ready again")
        await eventually(lambda: uploaded(world) == 10, "the counts again")
        after = world.status()
        assert after.keys() == before.keys()
        assert after["cursor"]["ingestedThrough"] >= before["cursor"]["ingestedThrough"]
        world.write_flows(10, start=10)
        await eventually(lambda: uploaded(world) == 20, "10 more")
    assert len(world.received()) == 20
