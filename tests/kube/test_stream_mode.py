"""spec.source.mode stream in the operator, in-process: the subscription, shard checkpoints
in status, a restart, and switching to poll and back without a gap or repeats."""

from __future__ import annotations

from typing import Any

from flowexport.kube import metrics
from flowexport.kube.cleanup import clean_up
from flowexport.kube.reconcile import reconcile
from tests.kube.conftest import NS, World
from tests.kube.fakes import operator
from tests.kube.test_worker import eventually, running

ROLE = "arn:aws:iam::123456789012:role/cwl-to-kinesis"
STREAM = {"mode": "stream", "stream": {"subscriptionRoleArn": ROLE, "readIntervalMillis": 200}}


def streams(world: World) -> list[str]:
    return list(world.cloud.clients.kinesis.list_streams()["StreamNames"])


def unique(world: World) -> int:
    return len(set(world.received()))


async def test_stream_mode_end_to_end_with_restart_and_mode_switches(world: World) -> None:
    body = world.body(source=STREAM)
    export = world.export()
    await reconcile(world.op, export, body)
    ready = world.condition("SubscriptionReady")
    assert ready == ("True", "Subscribed"), world.status()
    (subscribed,) = [c for c in world.status()["conditions"] if c["type"] == "SubscriptionReady"]
    assert "delivers to Kinesis stream" in subscribed["message"]
    (stream,) = streams(world)
    assert stream.startswith(f"flowexport-{NS}-prod-")
    async with running(world, export, body):
        await eventually(lambda: (world.status().get("source") or {}).get("mode") == "stream")
        world.write_flows(20)
        await eventually(lambda: len(world.received()) == 20, "the streamed flows at the PCE")
        await eventually(lambda: world.condition("Ready") == ("True", "Ready"), "Ready")
        await eventually(lambda: world.status()["counts"].get("flowsUploaded") == 20, "counts")
    status = world.status()
    assert status["source"]["since"] > 0 and status["source"]["streamArn"].endswith(f"/{stream}")
    (entry,) = status["shards"].values()
    assert entry["cursor"]["sequenceNumber"] is not None
    assert entry["millisBehindLatest"] == 0 and entry["counts"]["flowsUploaded"] == 20
    assert "StreamStarted" in world.events.reasons("Normal")
    shard = next(iter(status["shards"]))
    lag = f'flowexport_shard_lag_seconds{{name="prod",namespace="{NS}",shard="{shard}"}} 0.0'
    assert lag in metrics.generate_text().decode()

    # A restarted operator resumes from the shard checkpoints: nothing is sent twice.
    world.op = operator(world.kube, world.events, allowed_pce_urls=[world.pce.url])
    export = world.export()
    await reconcile(world.op, export, body)
    async with running(world, export, body):
        world.write_flows(10, start=20)
        await eventually(lambda: len(world.received()) == 30, "the new flows")
    assert unique(world) == 30 == len(world.received())

    # Back to poll: the filter and the stream go, polling resumes where the shards were.
    polled: dict[str, Any] = world.body(generation=2)
    await reconcile(world.op, export, polled)
    assert streams(world) == []
    async with running(world, export, polled):
        await eventually(lambda: (world.status().get("source") or {}).get("mode") == "poll")
        world.write_flows(10, start=30)
        await eventually(lambda: len(world.received()) == 40, "polled flows")
        await eventually(lambda: world.status()["counts"].get("flowsUploaded") == 40, "counts")
    assert unique(world) == 40 == len(world.received())
    assert "shards" not in world.status()

    # And to stream again: the log group is polled up to the new filter, then the stream read.
    streamed = world.body(generation=3, source=STREAM)
    await reconcile(world.op, export, streamed)
    async with running(world, export, streamed):
        await eventually(lambda: (world.status().get("source") or {}).get("mode") == "stream")
        world.write_flows(10, start=40)
        await eventually(lambda: len(world.received()) == 50, "streamed again")
    assert unique(world) == 50 == len(world.received())

    await clean_up(world.op, streamed)
    assert streams(world) == []
