"""What is in a VPC: its network interfaces and the instances they belong to (read only).

Two paginated reads per discovery, whatever the VPC's size: `DescribeNetworkInterfaces` and
`DescribeInstances`, both filtered by the VPC. Blocking (boto3): call it off the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from flowexport.aws.errors import AwsError, classify
from flowexport.aws.session import AwsClients
from flowexport.errors import Reason

#: Items per page (the largest both calls accept).
PAGE_SIZE = 1000
#: Pages read at most per call (5 million items): a loop of NextTokens ends even if AWS loops.
MAX_PAGES = 5000
#: Instances in these states have no traffic to label: their interfaces count as gone.
GONE_STATES = frozenset({"shutting-down", "terminated"})


@dataclass(frozen=True)
class NetworkInterface:
    """One ENI: its addresses (primary private IPv4 first), tags and attachment."""

    id: str
    addresses: tuple[str, ...]
    tags: tuple[tuple[str, str], ...] = ()
    instance_id: str | None = None
    device_index: int = 0
    private_dns_name: str | None = None
    interface_type: str = "interface"
    requester_managed: bool = False


@dataclass(frozen=True)
class Instance:
    """One EC2 instance: its state and tags."""

    id: str
    state: str
    tags: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class VpcInventory:
    """The VPC's network interfaces and the instances they are attached to."""

    interfaces: tuple[NetworkInterface, ...]
    instances: dict[str, Instance]


def discover(clients: AwsClients, vpc_id: str) -> VpcInventory:
    """Every network interface of the VPC and every instance in it (blocking; AwsError)."""
    vpc = [{"Name": "vpc-id", "Values": [vpc_id]}]
    interfaces = tuple(
        parsed
        for item in _pages(
            clients.ec2.describe_network_interfaces,
            "NetworkInterfaces",
            "DescribeNetworkInterfaces",
            Filters=vpc,
        )
        if (parsed := parse_interface(item)) is not None
    )
    instances: dict[str, Instance] = {}
    for reservation in _pages(
        clients.ec2.describe_instances, "Reservations", "DescribeInstances", Filters=vpc
    ):
        for item in reservation.get("Instances") or []:
            instance = parse_instance(item)
            if instance is not None:
                instances[instance.id] = instance
    return VpcInventory(interfaces, instances)


def _pages(
    call: Callable[..., dict[str, Any]], key: str, operation: str, **params: Any
) -> Iterator[dict[str, Any]]:
    token: str | None = None
    for _ in range(MAX_PAGES):
        page_params = dict(params, MaxResults=PAGE_SIZE)
        if token:
            page_params["NextToken"] = token
        try:
            page = call(**page_params)
        except Exception as exc:
            raise classify(exc, "ec2", operation) from None
        yield from (item for item in page.get(key) or [] if isinstance(item, dict))
        token = page.get("NextToken")
        if not token:
            return
    # A partial inventory would read as interfaces gone (and their workloads deleted).
    raise AwsError(
        f"AWS {operation} kept paging past {MAX_PAGES} pages; refusing a partial inventory",
        Reason.AWS_UNAVAILABLE,
    )


def _tags(items: Any) -> tuple[tuple[str, str], ...]:
    tags = {
        str(t["Key"]): str(t.get("Value") or "")
        for t in items or []
        if isinstance(t, dict) and t.get("Key")
    }
    return tuple(sorted(tags.items()))


def parse_interface(item: dict[str, Any]) -> NetworkInterface | None:
    """A DescribeNetworkInterfaces item, or None when it has no id or no address."""
    ident = item.get("NetworkInterfaceId")
    if not isinstance(ident, str) or not ident:
        return None
    private = [p for p in item.get("PrivateIpAddresses") or [] if isinstance(p, dict)]
    private.sort(key=lambda p: not p.get("Primary"))  # the primary address first
    addresses = [str(p["PrivateIpAddress"]) for p in private if p.get("PrivateIpAddress")]
    if not addresses and item.get("PrivateIpAddress"):
        addresses.append(str(item["PrivateIpAddress"]))
    addresses += [
        str(a["Ipv6Address"])
        for a in item.get("Ipv6Addresses") or []
        if isinstance(a, dict) and a.get("Ipv6Address")
    ]
    if not addresses:
        return None
    attachment = item.get("Attachment") or {}
    instance_id = attachment.get("InstanceId") if isinstance(attachment, dict) else None
    device_index = attachment.get("DeviceIndex") if isinstance(attachment, dict) else 0
    return NetworkInterface(
        id=ident,
        addresses=tuple(dict.fromkeys(addresses)),
        tags=_tags(item.get("TagSet")),
        instance_id=str(instance_id) if instance_id else None,
        device_index=device_index if isinstance(device_index, int) else 0,
        private_dns_name=item.get("PrivateDnsName") or None,
        interface_type=str(item.get("InterfaceType") or "interface"),
        requester_managed=bool(item.get("RequesterManaged")),
    )


def parse_instance(item: dict[str, Any]) -> Instance | None:
    """A DescribeInstances instance, or None without an id."""
    ident = item.get("InstanceId")
    if not isinstance(ident, str) or not ident:
        return None
    state = item.get("State") or {}
    name = state.get("Name") if isinstance(state, dict) else None
    return Instance(ident, str(name or "unknown"), _tags(item.get("Tags")))
