"""The workloads a VPC should have in the PCE (pure: no AWS, no PCE).

One workload per instance, with every address of every interface attached to it, named and
labelled from the instance's tags; one per network interface without a (live) instance, from
the interface's own tags (load balancers, NAT gateways, Lambda, pods with their own ENIs).
Peer workloads stand for addresses outside the VPC seen in flows, one per address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from flowexport.api.models import WorkloadsSpec
from flowexport.aws.interfaces import GONE_STATES, NetworkInterface, VpcInventory
from flowexport.core.records import parse_ip

#: The longest name and label value the PCE takes.
MAX_NAME = 255
MAX_LABEL_VALUE = 255
#: external_data_reference of a peer workload: this prefix and its address.
PEER_PREFIX = "peer/"


@dataclass(frozen=True)
class DesiredWorkload:
    """A workload as it should be: `ref` is its external_data_reference (instance or ENI id,
    or `peer/<address>`); interfaces are (name, canonical address) pairs."""

    ref: str
    name: str
    hostname: str | None
    interfaces: tuple[tuple[str, str], ...]
    labels: tuple[tuple[str, str], ...]
    description: str = ""

    @property
    def addresses(self) -> list[str]:
        """Its addresses, in interface order."""
        return [address for _, address in self.interfaces]


@dataclass
class Desired:
    """What a VPC should have, and the tag values that could not become labels."""

    workloads: list[DesiredWorkload] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def canonical(address: str) -> str | None:
    """The one spelling of an address (compressed IPv6), or None if it is not one: the core's
    `parse_ip` (bounded, cached), on the text without surrounding blanks."""
    return parse_ip(address.strip())


def _labels(
    spec: WorkloadsSpec, tags: Mapping[str, str], owner: str, problems: list[str]
) -> tuple[tuple[str, str], ...]:
    labels = dict(spec.labels)
    for tag, key in spec.labels_from_tags.items():
        value = tags.get(tag, "").strip()
        if not value:
            continue
        if len(value) > MAX_LABEL_VALUE:
            problems.append(
                f"{owner}: tag {tag} is longer than a PCE label value; label {key} left out"
            )
            continue
        labels[key] = value
    return tuple(sorted(labels.items()))


def _name(spec: WorkloadsSpec, ident: str, tags: Mapping[str, str], ip: str, vpc_id: str) -> str:
    name_tag = tags.get("Name", "").strip() or ident
    name = spec.name_template.format(name=name_tag, id=ident, ip=ip, vpcId=vpc_id).strip()
    return (name or ident)[:MAX_NAME]


def desired_workloads(inventory: VpcInventory, spec: WorkloadsSpec, vpc_id: str) -> Desired:
    """The workloads the VPC's interfaces call for, sorted by ref."""
    desired = Desired()
    groups: dict[str, list[NetworkInterface]] = {}
    for eni in inventory.interfaces:
        instance = inventory.instances.get(eni.instance_id) if eni.instance_id else None
        if instance is not None and instance.state in GONE_STATES:
            continue  # its interfaces go with it (AWS may list them a little longer)
        groups.setdefault(instance.id if instance else eni.id, []).append(eni)
    for ref in sorted(groups):
        enis = sorted(groups[ref], key=lambda e: (e.device_index, e.id))
        instance = inventory.instances.get(ref)
        tags = dict(instance.tags if instance else enis[0].tags)
        interfaces: list[tuple[str, str]] = []
        seen: set[str] = set()
        for position, eni in enumerate(enis):
            label = f"eth{eni.device_index if instance else position}"
            for raw in eni.addresses:
                address = canonical(raw)
                if address is not None and address not in seen:
                    seen.add(address)
                    interfaces.append((label, address))
        if not interfaces:
            continue
        primary = enis[0]
        kind = "instance" if instance else f"network interface ({primary.interface_type})"
        desired.workloads.append(
            DesiredWorkload(
                ref=ref,
                name=_name(spec, ref, tags, interfaces[0][1], vpc_id),
                hostname=primary.private_dns_name,
                interfaces=tuple(interfaces),
                labels=_labels(spec, tags, ref, desired.problems),
                description=f"{kind} {ref} in {vpc_id}",
            )
        )
    return desired


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def peer_networks(spec: WorkloadsSpec) -> tuple[Network, ...]:
    """spec.peerCidrs as networks."""
    return tuple(ipaddress.ip_network(c, strict=False) for c in spec.peer_cidrs)


def within(address: str, networks: Iterable[Network]) -> bool:
    """Whether an address falls in one of the networks."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip.version == net.version and ip in net for net in networks)


def peer_workloads(
    spec: WorkloadsSpec, addresses: Iterable[str], vpc_id: str
) -> list[DesiredWorkload]:
    """One workload per address in spec.peerCidrs, with the static labels."""
    found = []
    networks = peer_networks(spec)
    for raw in sorted(set(addresses)):
        address = canonical(raw)
        if address is None or not within(address, networks):
            continue
        found.append(
            DesiredWorkload(
                ref=f"{PEER_PREFIX}{address}",
                name=_name(spec, address, {}, address, vpc_id),
                hostname=None,
                interfaces=(("eth0", address),),
                labels=tuple(sorted(spec.labels.items())),
                description=f"peer address {address} seen in flows of {vpc_id}",
            )
        )
    return found
