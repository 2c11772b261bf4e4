"""What should exist and the plan to get there: pure functions, with properties."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowexport.api.models import WorkloadsSpec
from flowexport.aws.interfaces import Instance, NetworkInterface, VpcInventory, parse_interface
from flowexport.workloads.desired import DesiredWorkload, desired_workloads, peer_workloads
from flowexport.workloads.plan import PceWorkload, make_plan

MARK = "flowexport.io/ns/prod"
SPEC = WorkloadsSpec(mode="Sync", labels={"env": "prod"}, labels_from_tags={"App": "app"})


def eni(
    ident: str, *addresses: str, instance: str | None = None, index: int = 0, **tags: str
) -> NetworkInterface:
    return NetworkInterface(ident, addresses, tuple(sorted(tags.items())), instance, index)


def test_an_instance_gathers_its_interfaces_in_device_order_with_its_own_tags() -> None:
    inventory = VpcInventory(
        (
            eni("eni-b", "10.0.0.11", "2600:1f18::0:5", instance="i-1", index=1, App="ignored"),
            eni("eni-a", "10.0.0.10", instance="i-1", index=0),
            eni("eni-c", "10.0.0.20", App="lb", Name="shop-lb"),
        ),
        {"i-1": Instance("i-1", "running", (("App", "shop"), ("Name", "web-1")))},
    )
    desired = desired_workloads(inventory, SPEC, "vpc-1")
    assert [(w.ref, w.name, w.interfaces, w.labels) for w in desired.workloads] == [
        ("eni-c", "shop-lb", (("eth0", "10.0.0.20"),), (("app", "lb"), ("env", "prod"))),
        (
            "i-1",
            "web-1",
            (("eth0", "10.0.0.10"), ("eth1", "10.0.0.11"), ("eth1", "2600:1f18::5")),
            (("app", "shop"), ("env", "prod")),
        ),
    ]


def test_interfaces_of_a_terminated_instance_are_gone_and_a_long_tag_is_not_a_label() -> None:
    inventory = VpcInventory(
        (eni("eni-a", "10.0.0.10", instance="i-1"), eni("eni-b", "10.0.0.11", App="x" * 300)),
        {"i-1": Instance("i-1", "terminated")},
    )
    desired = desired_workloads(inventory, SPEC, "vpc-1")
    assert [(w.ref, w.labels) for w in desired.workloads] == [("eni-b", (("env", "prod"),))]
    assert desired.problems == [
        "eni-b: tag App is longer than a PCE label value; label app left out"
    ]


def test_the_name_template_and_its_checks() -> None:
    spec = WorkloadsSpec(mode="Sync", name_template="aws-{vpcId}-{id}-{ip}")
    inventory = VpcInventory((eni("eni-a", "10.0.0.10"),), {})
    assert (
        desired_workloads(inventory, spec, "vpc-1").workloads[0].name == "aws-vpc-1-eni-a-10.0.0.10"
    )
    for bad in ("{nope}", "plain", "{name!r}", "{name:>9}", "{"):
        with pytest.raises(ValueError):
            WorkloadsSpec(mode="Sync", name_template=bad)
    with pytest.raises(ValueError, match="label key"):
        WorkloadsSpec(labels={"Bad Key": "x"})


def test_a_malformed_aws_item_is_skipped_not_a_crash() -> None:
    assert parse_interface({}) is None
    assert parse_interface({"NetworkInterfaceId": "eni-1", "PrivateIpAddresses": []}) is None
    parsed = parse_interface(
        {
            "NetworkInterfaceId": "eni-1",
            "PrivateIpAddresses": [
                {"PrivateIpAddress": "10.0.0.2", "Primary": False},
                {"PrivateIpAddress": "10.0.0.1", "Primary": True},
                "junk",
            ],
            "Attachment": {"InstanceId": "i-1", "DeviceIndex": "x"},
            "TagSet": [{"Key": "App"}, {"Value": "no key"}],
        }
    )
    assert parsed is not None
    assert (parsed.addresses, parsed.device_index, parsed.tags) == (
        ("10.0.0.1", "10.0.0.2"),
        0,
        (("App", ""),),
    )


def test_peers_are_only_addresses_in_peer_cidrs() -> None:
    spec = WorkloadsSpec(mode="Sync", peer_cidrs=["192.168.0.0/16", "fd00::/8"])
    found = peer_workloads(spec, ["192.168.1.1", "8.8.8.8", "fd00::1", "bogus", "192.168.1.1"], "v")
    assert [w.ref for w in found] == ["peer/192.168.1.1", "peer/fd00::1"]


# -- the plan, as a property: applied to any PCE, it reaches the desired state and touches
# nothing that is not exactly ours ---------------------------------------------------------

ADDRESSES = [f"10.0.0.{i}" for i in range(1, 9)]
LABELS = {("env", "prod"): "/orgs/1/labels/1", ("app", "a"): "/orgs/1/labels/2"}


@st.composite
def desired_sets(draw: Any) -> list[DesiredWorkload]:
    refs = draw(st.lists(st.sampled_from(["i-1", "i-2", "i-3", "eni-4"]), unique=True))
    found = []
    for ref in refs:
        addresses = draw(st.lists(st.sampled_from(ADDRESSES), min_size=1, max_size=3, unique=True))
        labels = draw(st.lists(st.sampled_from(sorted(LABELS)), unique=True))
        found.append(
            DesiredWorkload(
                ref,
                draw(st.sampled_from(["a", "b"])),
                None,
                tuple(("eth0", a) for a in addresses),
                tuple(sorted(labels)),
            )
        )
    return found


@st.composite
def pce_sets(draw: Any) -> list[PceWorkload]:
    items = []
    for i in range(draw(st.integers(0, 6))):
        mark = draw(st.sampled_from([MARK, f"{MARK}-2", MARK.upper(), None]))
        items.append(
            PceWorkload(
                href=f"/orgs/1/workloads/{i}",
                name=draw(st.sampled_from(["a", "b"])),
                hostname=None,
                interfaces=frozenset(
                    ("eth0", a) for a in draw(st.lists(st.sampled_from(ADDRESSES), max_size=2))
                ),
                labels=frozenset(draw(st.lists(st.sampled_from(sorted(LABELS.values()))))),
                external_data_set=mark,
                external_data_reference=draw(st.sampled_from(["i-1", "i-2", "i-9", "eni-4"])),
                managed=draw(st.booleans()),
            )
        )
    return items


@settings(max_examples=300, deadline=None)
@given(desired_sets(), pce_sets(), st.booleans())
def test_the_plan_touches_only_ours_and_reaches_the_desired_state(
    desired: list[DesiredWorkload], existing: list[PceWorkload], delete_gone: bool
) -> None:
    plan = make_plan(desired, existing, MARK, LABELS, delete_gone=delete_gone)
    mine = {w.href for w in existing if w.external_data_set == MARK and not w.managed}
    touched = {w.href for w in plan.delete} | {c.href for c, _ in plan.update}
    assert touched <= mine
    held = {a for w in existing if w.href not in mine for a in w.addresses}
    result = {ref: w.addresses for ref, w in plan.kept.items()}
    for _, wanted in plan.update:
        result[wanted.ref] = set(wanted.addresses)
    for wanted in plan.create:
        assert wanted.ref not in result
        result[wanted.ref] = set(wanted.addresses)
    for want in desired:
        expected = set(want.addresses) - held
        if expected:
            assert result.get(want.ref) == expected, want.ref
        else:
            assert want.ref not in result
    # one workload per ref; and with delete_gone, none that is not desired
    survivors = [w for w in existing if w.href in mine and w not in plan.delete]
    refs = [w.external_data_reference for w in survivors]
    assert len(refs) == len(set(refs))
    if delete_gone:
        assert set(refs) <= {w.ref for w in desired}
