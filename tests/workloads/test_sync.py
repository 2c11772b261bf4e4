"""The workload sync against moto in server mode and the PCE simulator, over real HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from flowexport.api.models import FlowExportSpec
from flowexport.aws import interfaces
from flowexport.core.flows import Flow
from flowexport.errors import Reason
from flowexport.pce.client import PCEClient
from flowexport.pce.errors import PCEPermissionError
from flowexport.workloads import sync as sync_module
from flowexport.workloads.sync import WorkloadSync, delete_workloads, mark_of, synced
from tests.cloud import Cloud
from tests.pcesim import API_KEY, SimPCE

OWNER = "security/prod"


@dataclass
class Vpc:
    """A VPC in moto with an instance (two interfaces) and a load balancer's interface."""

    cloud: Cloud
    subnet: str
    image: str
    web: str  # instance id
    web_ips: list[str]
    lb_eni: str
    lb_ips: list[str]

    @property
    def mark(self) -> str:
        return mark_of(OWNER, self.cloud.vpc_id)

    @property
    def ec2(self) -> Any:
        return self.cloud.clients.ec2

    def instance(self, tags: dict[str, str], ip: str | None = None) -> str:
        extra = {"PrivateIpAddress": ip} if ip else {}
        made = self.ec2.run_instances(
            ImageId=self.image,
            MinCount=1,
            MaxCount=1,
            SubnetId=self.subnet,
            TagSpecifications=[
                {
                    "ResourceType": "instance",
                    "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                }
            ],
            **extra,
        )
        return str(made["Instances"][0]["InstanceId"])

    def tag(self, resource: str, **tags: str) -> None:
        self.ec2.create_tags(
            Resources=[resource], Tags=[{"Key": k, "Value": v} for k, v in tags.items()]
        )


@pytest.fixture
def vpc(cloud: Cloud) -> Vpc:
    ec2 = cloud.clients.ec2
    subnet = ec2.create_subnet(VpcId=cloud.vpc_id, CidrBlock="10.0.0.0/20")["Subnet"]["SubnetId"]
    image = ec2.describe_images()["Images"][0]["ImageId"]
    made = Vpc(cloud, subnet, image, "", [], "", [])
    made.web = made.instance({"Name": "web-1", "App": "shop", "Role": "web"}, ip="10.0.1.10")
    second = ec2.create_network_interface(SubnetId=subnet, PrivateIpAddress="10.0.1.11")
    ec2.attach_network_interface(
        NetworkInterfaceId=second["NetworkInterface"]["NetworkInterfaceId"],
        InstanceId=made.web,
        DeviceIndex=1,
    )
    made.web_ips = ["10.0.1.10", "10.0.1.11"]
    lb = ec2.create_network_interface(
        SubnetId=subnet,
        PrivateIpAddress="10.0.2.20",
        SecondaryPrivateIpAddressCount=1,
        Description="ELB app/shop-lb/0123",
        TagSpecifications=[
            {
                "ResourceType": "network-interface",
                "Tags": [{"Key": "App", "Value": "shop"}, {"Key": "Role", "Value": "lb"}],
            }
        ],
    )["NetworkInterface"]
    made.lb_eni = lb["NetworkInterfaceId"]
    made.lb_ips = [p["PrivateIpAddress"] for p in lb["PrivateIpAddresses"]]
    return made


def spec(cloud: Cloud, **workloads: Any) -> FlowExportSpec:
    values: dict[str, Any] = {
        "mode": "Sync",
        "labels": {"env": "prod"},
        "labelsFromTags": {"App": "app", "Role": "role"},
    }
    values.update(workloads)
    return cloud.flowexport_spec(workloads=values)


def syncer(cloud: Cloud, client: PCEClient, **workloads: Any) -> WorkloadSync:
    return WorkloadSync(spec(cloud, **workloads), cloud.clients, client, OWNER)


def stored(pce: SimPCE) -> list[dict[str, Any]]:
    return list(pce.call(lambda: [dict(w) for w in pce.sim.state.workloads.values()]))


def by_ref(pce: SimPCE, vpc: Vpc) -> dict[str, dict[str, Any]]:
    mark = vpc.mark
    return {w["external_data_reference"]: w for w in stored(pce) if w["external_data_set"] == mark}


def labels_of(pce: SimPCE, workload: dict[str, Any]) -> dict[str, str]:
    known = pce.call(lambda: {x["href"]: x for x in pce.sim.state.labels.values()})
    return {known[x["href"]]["key"]: known[x["href"]]["value"] for x in workload["labels"]}


def addresses(workload: dict[str, Any]) -> list[tuple[str, str]]:
    return [(i["name"], i["address"]) for i in workload["interfaces"]]


def changes(pce: SimPCE) -> list[str]:
    return [r["path"].rsplit("/", 1)[-1] for r in pce.requests() if r["method"] != "GET"]


async def test_first_sync_makes_one_labelled_workload_per_instance_and_per_lone_eni(
    vpc: Vpc, pce: SimPCE, client: PCEClient
) -> None:
    result = await syncer(vpc.cloud, client).sync()
    assert (result.created, result.updated, result.deleted, result.failed) == (2, 0, 0, 0)
    found = by_ref(pce, vpc)
    assert set(found) == {vpc.web, vpc.lb_eni}
    web, lb = found[vpc.web], found[vpc.lb_eni]
    assert web["name"] == "web-1"
    assert addresses(web) == [("eth0", "10.0.1.10"), ("eth1", "10.0.1.11")]
    assert labels_of(pce, web) == {"env": "prod", "app": "shop", "role": "web"}
    assert lb["name"] == vpc.lb_eni  # no Name tag: the id
    assert sorted(a for _, a in addresses(lb)) == sorted(vpc.lb_ips)
    assert labels_of(pce, lb) == {"env": "prod", "app": "shop", "role": "lb"}
    # One list of each collection, the labels created, then one bulk_create for both.
    assert changes(pce) == ["labels"] * 4 + ["bulk_create"]


async def test_a_sync_with_nothing_changed_changes_nothing(
    vpc: Vpc, pce: SimPCE, client: PCEClient
) -> None:
    sync = syncer(vpc.cloud, client)
    await sync.sync()
    pce.call(pce.sim.state.requests.clear)
    result = await sync.sync()
    assert (result.created, result.updated, result.deleted, result.managed) == (0, 0, 0, 2)
    assert [(r["method"], r["path"].rsplit("/", 1)[-1]) for r in pce.requests()] == [
        ("GET", "workloads"),
        ("GET", "labels"),
    ]


async def test_tag_and_address_changes_update_the_workload(
    vpc: Vpc, pce: SimPCE, client: PCEClient
) -> None:
    sync = syncer(vpc.cloud, client)
    await sync.sync()
    vpc.tag(vpc.web, Role="api", Name="api-1")
    eni = vpc.ec2.describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": [vpc.web]}]
    )["NetworkInterfaces"]
    primary = next(e for e in eni if e["Attachment"]["DeviceIndex"] == 0)
    vpc.ec2.assign_private_ip_addresses(
        NetworkInterfaceId=primary["NetworkInterfaceId"], PrivateIpAddresses=["10.0.1.12"]
    )
    result = await sync.sync()
    assert (result.created, result.updated, result.deleted) == (0, 1, 0)
    web = by_ref(pce, vpc)[vpc.web]
    assert web["name"] == "api-1"
    assert labels_of(pce, web) == {"env": "prod", "app": "shop", "role": "api"}
    assert ("eth0", "10.0.1.12") in addresses(web)
    assert changes(pce)[-2:] == ["labels", "bulk_update"]  # the new label, then the update


@pytest.mark.parametrize("on_gone", ["Delete", "Keep"])
async def test_a_terminated_instance_loses_its_workload_unless_kept(
    vpc: Vpc, pce: SimPCE, client: PCEClient, on_gone: str
) -> None:
    sync = syncer(vpc.cloud, client, onEniGone=on_gone)
    await sync.sync()
    vpc.ec2.terminate_instances(InstanceIds=[vpc.web])
    vpc.ec2.delete_network_interface(NetworkInterfaceId=vpc.lb_eni)
    result = await sync.sync()
    if on_gone == "Delete":
        assert (result.deleted, result.managed) == (2, 0)
        assert by_ref(pce, vpc) == {}
    else:
        assert (result.deleted, result.managed) == (0, 2)
        assert set(by_ref(pce, vpc)) == {vpc.web, vpc.lb_eni}


async def test_an_address_held_by_a_managed_workload_is_left_to_it_and_it_is_never_touched(
    vpc: Vpc, pce: SimPCE, client: PCEClient
) -> None:
    managed = pce.call(
        lambda: pce.sim.add_workload(
            {
                "name": "web-1 (VEN)",
                "hostname": "web-1",
                "interfaces": [{"name": "eth0", "address": "10.0.1.10"}],
            },
            managed=True,
        )
    )
    before = [w for w in stored(pce) if w["href"] == managed["href"]]
    result = await syncer(vpc.cloud, client).sync()
    assert result.covered == 1
    assert addresses(by_ref(pce, vpc)[vpc.web]) == [("eth1", "10.0.1.11")]
    assert [w for w in stored(pce) if w["href"] == managed["href"]] == before
    # An instance whose every address another workload holds gets no workload at all.
    pce.call(
        lambda: pce.sim.add_workload(
            {"name": "web-1 eth1", "interfaces": [{"name": "eth1", "address": "10.0.1.11"}]},
            managed=True,
        )
    )
    result = await syncer(vpc.cloud, client).sync()
    assert result.deleted == 1 and vpc.web not in by_ref(pce, vpc)


async def test_only_workloads_with_exactly_this_mark_are_changed(
    vpc: Vpc, pce: SimPCE, client: PCEClient
) -> None:
    """Another FlowExport's mark that merely starts with ours, and an integration's workload
    with our instance id as its reference, are never updated or deleted."""
    others = [
        {
            "name": "stale",
            "interfaces": [{"name": "eth0", "address": "10.9.9.9"}],
            "external_data_set": mark,
            "external_data_reference": vpc.web,
        }
        for mark in (f"{vpc.mark}-2", vpc.mark.upper(), "other-integration")
    ]
    hrefs = [
        pce.call(lambda body=body: pce.sim.add_workload(body, managed=False))["href"]
        for body in others
    ]
    before = [w for w in stored(pce) if w["href"] in hrefs]
    await syncer(vpc.cloud, client).sync()
    await syncer(vpc.cloud, client, onEniGone="Delete").sync()
    assert [w for w in stored(pce) if w["href"] in hrefs] == before
    assert not any(h in str(r) for r in pce.requests() for h in hrefs)


async def test_our_workload_whose_instance_is_gone_is_deleted_and_duplicates_are_mended(
    vpc: Vpc, pce: SimPCE, client: PCEClient
) -> None:
    """A workload of ours left from before (a lost answer made it twice, or its instance went
    while the operator was down) is mended by the next sync."""
    for ref in (vpc.web, vpc.web, "i-0gone"):
        pce.call(
            lambda ref=ref: pce.sim.add_workload(
                {
                    "name": "old",
                    "interfaces": [{"name": "eth0", "address": "10.0.1.10"}],
                    "external_data_set": vpc.mark,
                    "external_data_reference": ref,
                },
                managed=False,
            )
        )
    result = await syncer(vpc.cloud, client).sync()
    assert (result.created, result.updated, result.deleted) == (1, 1, 2)
    assert sorted(w["external_data_reference"] for w in stored(pce)) == sorted(
        [vpc.web, vpc.lb_eni]
    )


async def test_peer_addresses_get_a_workload_once_and_only_inside_peer_cidrs(
    vpc: Vpc, pce: SimPCE, client: PCEClient
) -> None:
    sync = syncer(vpc.cloud, client, peerCidrs=["192.168.0.0/16", "10.0.0.0/8"])
    await sync.sync()
    flows = [
        Flow("192.168.5.5", "10.0.1.10", 443, 6),  # a peer client
        Flow("10.0.1.10", "10.0.2.20", 80, 6),  # both in the VPC: no peer
        Flow("10.0.1.11", "8.8.8.8", 53, 17),  # outside peerCidrs
        Flow("192.168.5.5", "10.0.1.11", 22, 6),  # the same peer again
    ]
    made = await sync.ensure_peers(flows)
    assert made is not None and made.created == 1
    assert await sync.ensure_peers(flows) is None  # nothing new: no request
    peer = by_ref(pce, vpc)["peer/192.168.5.5"]
    assert addresses(peer) == [("eth0", "192.168.5.5")] and labels_of(pce, peer) == {"env": "prod"}
    result = await sync.sync()  # a full sync keeps the peer
    assert (result.deleted, result.managed) == (0, 3)
    # A peer outside the narrowed peerCidrs goes, even with onEniGone Keep (it is no ENI).
    narrowed = syncer(vpc.cloud, client, peerCidrs=["172.16.0.0/12"], onEniGone="Keep")
    assert (await narrowed.sync()).deleted == 1
    assert "peer/192.168.5.5" not in by_ref(pce, vpc)


async def test_thousands_of_interfaces_go_in_bulk_requests_of_1000_and_a_large_org_is_listed_async(
    vpc: Vpc, pce: SimPCE, client: PCEClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = interfaces.VpcInventory(
        tuple(
            interfaces.NetworkInterface(
                f"eni-{i:05d}", (f"10.1.{i // 250}.{i % 250 + 1}",), (("App", f"app{i % 3}"),)
            )
            for i in range(2100)
        ),
        {},
    )
    monkeypatch.setattr(sync_module, "discover", lambda clients, vpc_id: fake)
    for i in range(600):  # someone else's: the org now holds more than one synchronous GET
        pce.call(
            lambda i=i: pce.sim.add_workload({"name": f"x{i}", "interfaces": []}, managed=True)
        )
    result = await syncer(vpc.cloud, client).sync()
    assert (result.created, result.failed) == (2100, 0)
    assert changes(pce).count("bulk_create") == 3
    paths = [r["path"] for r in pce.requests()]
    assert any("/jobs/" in p for p in paths) and any("/datafiles/" in p for p in paths)
    assert len(by_ref(pce, vpc)) == 2100


async def test_a_label_the_pce_refuses_is_left_out_and_reported_the_rest_syncs(
    vpc: Vpc, pce: SimPCE, client: PCEClient
) -> None:
    sync = syncer(vpc.cloud, client, labels={"env": "prod", "tier": "gold"})  # no key "tier"
    result = await sync.sync()
    assert (result.created, result.failed) == (2, 1)
    assert "label tier=gold" in result.errors[0] and "label_key_invalid" in result.errors[0]
    assert labels_of(pce, by_ref(pce, vpc)[vpc.web]) == {
        "env": "prod",
        "app": "shop",
        "role": "web",
    }
    update = synced(result)
    assert (update.ok, update.reason) == (False, Reason.WORKLOADS_REJECTED)


async def test_items_the_pce_refuses_are_counted_and_reported_not_raised(
    vpc: Vpc, pce: SimPCE, client: PCEClient
) -> None:
    original = pce.sim._bulk_create_one

    def refuse_web(org: str, item: Any) -> dict[str, Any]:
        if item.get("name") == "web-1":
            error = {"token": "validation_failure", "message": "injected refusal"}
            return {"href": None, "status": "validation_failure", **error, "errors": [error]}
        return original(org, item)

    pce.call(lambda: setattr(pce.sim, "_bulk_create_one", refuse_web))
    result = await syncer(vpc.cloud, client).sync()
    assert (result.created, result.failed, result.managed) == (1, 1, 1)
    update = synced(result)
    assert (update.ok, update.reason) == (False, Reason.WORKLOADS_REJECTED)
    assert "injected refusal" in update.message
    pce.call(lambda: setattr(pce.sim, "_bulk_create_one", original))
    again = await syncer(vpc.cloud, client).sync()  # the next sync makes it
    assert (again.created, again.failed) == (1, 0) and synced(again).ok


async def test_a_read_only_key_fails_the_sync_as_forbidden(vpc: Vpc, pce: SimPCE) -> None:
    pce.call(lambda: setattr(pce.sim.config, "read_only_keys", frozenset({API_KEY})))
    async with pce.client() as client:
        with pytest.raises(PCEPermissionError):
            await syncer(vpc.cloud, client).sync()


async def test_deleting_removes_exactly_this_flowexports_workloads(
    vpc: Vpc, pce: SimPCE, client: PCEClient
) -> None:
    await syncer(vpc.cloud, client).sync()
    other = pce.call(
        lambda: pce.sim.add_workload(
            {"name": "o", "interfaces": [], "external_data_set": f"{vpc.mark}-2"}, managed=False
        )
    )
    assert await delete_workloads(client, OWNER, vpc.cloud.vpc_id) == 2
    assert [w["href"] for w in stored(pce)] == [other["href"]]
    assert await delete_workloads(client, OWNER, vpc.cloud.vpc_id) == 0


def test_a_mark_never_exceeds_the_pce_limit() -> None:
    vpc = "vpc-0123456789abcdef0"
    long = mark_of("n" * 63 + "/" + "x" * 253, vpc)
    assert len(long) == 255 and long != mark_of("n" * 63 + "/" + "x" * 252 + "y", vpc)
    assert mark_of("ns/a", vpc) == f"flowexport.io/{vpc}/ns/a"
    assert mark_of("ns/a", vpc) != mark_of("ns/a", "vpc-0123456789abcdef1")


async def test_new_labels_per_sync_are_bounded_and_the_rest_come_next_time(
    vpc: Vpc, pce: SimPCE, client: PCEClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tags are free text: a VPC whose every interface has its own App value must not turn one
    sync into thousands of label POSTs; the rest waits, reported, for the next sync."""
    monkeypatch.setattr(sync_module, "MAX_NEW_LABELS", 3)
    for i in range(4):
        vpc.ec2.create_network_interface(
            SubnetId=vpc.subnet,
            TagSpecifications=[
                {"ResourceType": "network-interface", "Tags": [{"Key": "App", "Value": f"a{i}"}]}
            ],
        )
    sync = syncer(vpc.cloud, client, labels={})
    first = await sync.sync()
    assert changes(pce).count("labels") == 3
    assert (first.failed, first.pending_labels) == (0, 4)
    assert "left off until the next sync" in first.problems[0]
    update = synced(first)
    assert update.ok and "left off until the next sync" in update.message  # progress, no error
    assert first.created == 6  # every workload made, some without their app label yet
    # 7 labels wanted (app a0-a3 and shop, role web and lb): 3, 3, then the last one.
    second, third = await sync.sync(), await sync.sync()
    assert (second.pending_labels, third.pending_labels) == (1, 0)
    assert second.updated + third.updated > 0
    assert changes(pce).count("labels") == 7
    apps = {labels_of(pce, w).get("app") for w in by_ref(pce, vpc).values()}
    assert {"a0", "a1", "a2", "a3", "shop"} <= apps
