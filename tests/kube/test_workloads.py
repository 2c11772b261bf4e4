"""spec.workloads in the operator, in-process: the first sync before the first upload, peers
before the flows naming them, status, Events, a restart, suspension, clean-up, mode Off."""

from __future__ import annotations

import asyncio
from typing import Any

from flowexport.kube.cleanup import clean_up
from flowexport.kube.reconcile import reconcile
from flowexport.kube.state import Export
from flowexport.workloads.sync import mark_of
from tests.kube.conftest import NS, World
from tests.kube.fakes import operator
from tests.kube.test_worker import eventually, running

WORKLOADS = {
    "mode": "Sync",
    "labels": {"env": "prod"},
    "labelsFromTags": {"App": "app"},
    "peerCidrs": ["10.1.0.0/16"],
}


def an_instance(world: World) -> str:
    """An instance at 10.0.0.1, the client of the first connection `write_flows` writes."""
    ec2 = world.cloud.clients.ec2
    subnet = ec2.create_subnet(VpcId=world.cloud.vpc_id, CidrBlock="10.0.0.0/24")["Subnet"]
    made = ec2.run_instances(
        ImageId=ec2.describe_images()["Images"][0]["ImageId"],
        MinCount=1,
        MaxCount=1,
        SubnetId=subnet["SubnetId"],
        PrivateIpAddress="10.0.0.1",
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "App", "Value": "shop"}]}],
    )
    return str(made["Instances"][0]["InstanceId"])


def ours(world: World) -> dict[str, dict[str, Any]]:
    workloads = world.pce.call(lambda: [dict(w) for w in world.pce.sim.state.workloads.values()])
    mark = mark_of(f"{NS}/prod", world.cloud.vpc_id)
    return {w["external_data_reference"]: w for w in workloads if w["external_data_set"] == mark}


def order(world: World) -> list[str]:
    return [
        r["path"].rsplit("/", 1)[-1] for r in world.pce.requests() if r["method"] in ("PUT", "POST")
    ]


async def test_workloads_are_made_before_the_first_upload_and_reported(world: World) -> None:
    instance = an_instance(world)
    body = world.body(workloads=WORKLOADS)
    export = world.export()
    await reconcile(world.op, export, body)
    assert world.condition("WorkloadsSynced") == ("Unknown", "Pending")
    world.write_flows(1)  # 10.0.0.1 -> 10.1.0.9:443, a peer server
    async with running(world, export, body):
        await eventually(lambda: len(world.received()) == 1, "the flow at the PCE")
        await eventually(lambda: world.condition("Ready") == ("True", "Ready"), "Ready")
    assert set(ours(world)) == {instance, "peer/10.1.0.9"}
    requests = order(world)
    # The VPC's workload, then the peer's, then the flow naming both.
    assert requests.index("bulk_create") < requests.index("bulk_traffic_flows")
    assert requests.count("bulk_create") == 2
    assert world.condition("WorkloadsSynced") == ("True", "Synced")
    status = world.status()["workloads"]
    assert (status["created"], status["managed"], status["failed"]) == (2, 2, 0)
    assert status["lastSyncTime"].endswith("Z")
    assert "WorkloadsChanged" in world.events.reasons("Normal")

    # A restarted operator keeps the totals and changes nothing that is in step.
    world.op = operator(world.kube, world.events, allowed_pce_urls=[world.pce.url])
    export = world.export()
    await reconcile(world.op, export, body)
    async with running(world, export, body):
        await eventually(lambda: world.condition("WorkloadsSynced") == ("True", "Synced"))
        await eventually(lambda: world.condition("Ready") == ("True", "Ready"), "Ready again")
    assert world.status()["workloads"]["created"] == 2
    assert order(world).count("bulk_create") == 2

    # Deleting the FlowExport (deletionPolicy Delete) deletes its workloads.
    await clean_up(world.op, body)
    assert ours(world) == {}
    assert any("2 PCE workloads" in m for _, r, m in world.events.posted if r == "Deleted")


async def test_no_flow_is_uploaded_while_the_first_sync_fails(world: World) -> None:
    an_instance(world)
    body = world.body(workloads=WORKLOADS)
    export = world.export()
    await reconcile(world.op, export, body)
    world.write_flows(3)
    # The key may post flows but not read workloads: a terminal failure of the first sync.
    world.pce.faults(fail_first=1000, fail_status=403, path_contains="/workloads")
    async with running(world, export, body):
        await eventually(
            lambda: world.condition("WorkloadsSynced") == ("False", "PCEForbidden"),
            "the sync's failure",
        )
        await eventually(lambda: world.condition("Stalled") == ("True", "PCEForbidden"))
        await asyncio.sleep(1.5)  # a poll or two: still nothing uploaded
    assert world.received() == []
    assert world.status()["counts"]["flowsUploaded"] == 0


async def test_suspended_sync_is_suspended_and_mode_off_touches_no_workload(world: World) -> None:
    body = world.body(workloads=WORKLOADS, suspend=True)
    export = world.export()
    await reconcile(world.op, export, body)
    async with running(world, export, body):
        await eventually(lambda: world.condition("WorkloadsSynced") == ("False", "Suspended"))
        assert world.condition("Ready") == ("False", "Suspended")
        assert world.condition("Reconciling") == ("False", "Suspended")

    world.pce.call(world.pce.sim.state.requests.clear)
    off = world.body(name="off")
    export = world.export("off")
    await reconcile(world.op, export, off)
    assert world.condition("WorkloadsSynced", "off") == ("True", "Disabled")
    world.write_flows(2)
    async with running(world, export, off):
        await eventually(lambda: len(world.received()) == 2, "the flows")
    assert not any("workloads" in r["path"] for r in world.pce.requests())
    assert "workloads" not in world.status("off")


async def synced(world: World) -> tuple[dict[str, Any], Export]:
    """A FlowExport with Sync, reconciled; its body and state (its worker not running)."""
    an_instance(world)
    body = world.body(workloads=WORKLOADS)
    export = world.export()
    await reconcile(world.op, export, body)
    return body, export


async def test_a_clean_up_without_the_pce_secret_completes_and_says_what_it_left(
    world: World,
) -> None:
    body, export = await synced(world)
    async with running(world, export, body):
        await eventually(lambda: world.condition("WorkloadsSynced") == ("True", "Synced"))
    world.kube.secrets.pop((NS, "pce-key"))  # pruned together with the FlowExport
    await clean_up(world.op, body)
    assert len(ours(world)) == 1  # left, and said so
    (warning,) = [m for t, r, m in world.events.posted if r == "CleanupIncomplete"]
    assert "left in the PCE" in warning and "pce-key" in warning
    assert world.op.cleaned_up  # the deletion is not held up


async def test_turning_the_mode_off_keeps_the_workloads_and_clears_their_status(
    world: World,
) -> None:
    body, export = await synced(world)
    async with running(world, export, body):
        await eventually(lambda: world.condition("WorkloadsSynced") == ("True", "Synced"))
        body["spec"]["workloads"] = {"mode": "Off"}
        body["metadata"]["generation"] = 2
        await reconcile(world.op, export, body)
        await eventually(lambda: world.condition("Ready") == ("True", "Ready"), "Ready for gen 2")
    assert world.condition("WorkloadsSynced") == ("True", "Disabled")
    assert "workloads" not in world.status()
    assert len(ours(world)) == 1
