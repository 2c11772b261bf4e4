"""Turn a parsed record into a directed Flow, applying the user's action and CIDR filters."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from flowexport.core.direction import PORT_PROTOCOLS, source_is_client
from flowexport.core.flows import Flow
from flowexport.core.reasons import SkipReason
from flowexport.core.records import Record

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class FlowFilter:
    """Which flows to keep.

    `actions`: the record actions kept (a format without `action` keeps every record).
    `include`: when non-empty, a flow is kept only if its client or server is in one of them.
    `exclude`: a flow whose client or server is in one of them is dropped (wins over include).
    """

    actions: frozenset[str] = frozenset({"ACCEPT"})
    include: tuple[Network, ...] = ()
    exclude: tuple[Network, ...] = ()

    @classmethod
    def build(
        cls,
        actions: Iterable[str] = ("ACCEPT",),
        include: Iterable[str] = (),
        exclude: Iterable[str] = (),
    ) -> FlowFilter:
        """Build a filter from text; raises ValueError naming a bad action or CIDR."""
        wanted = frozenset(a.strip().upper() for a in actions if a.strip())
        bad = wanted - {"ACCEPT", "REJECT"}
        if bad:
            raise ValueError(f"unknown action(s): {', '.join(sorted(bad))}")
        if not wanted:
            raise ValueError("at least one action (ACCEPT or REJECT) must be kept")
        return cls(wanted, _networks(include), _networks(exclude))

    def keeps(self, client: str, server: str) -> bool:
        """Apply the CIDR rules to a flow's two endpoints."""
        if not self.include and not self.exclude:
            return True
        ips = (ipaddress.ip_address(client), ipaddress.ip_address(server))
        if any(ip in net for net in self.exclude for ip in ips):
            return False
        return not self.include or any(ip in net for net in self.include for ip in ips)


def _networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not a CIDR: {cidr!r}") from None
    return tuple(networks)


def normalise(record: Record, flow_filter: FlowFilter) -> Flow | SkipReason:
    """The directed flow of a parsed record, or why it does not make one.

    Packet-level addresses (`pkt-srcaddr`/`pkt-dstaddr`) win over the ENI's addresses, which
    AWS rewrites for NAT, transit gateways, EKS pods and secondary IPs.
    """
    action = record.get("action")
    if action is not None and action not in flow_filter.actions:
        return SkipReason.ACTION_FILTERED
    src = record.get("pkt-srcaddr") or record.get("srcaddr")
    dst = record.get("pkt-dstaddr") or record.get("dstaddr")
    protocol = record.get("protocol")
    if not isinstance(src, str) or not isinstance(dst, str) or not isinstance(protocol, int):
        return SkipReason.MISSING_FIELD
    if (":" in src) != (":" in dst):
        return SkipReason.BAD_IP  # one packet cannot go from IPv4 to IPv6
    if protocol in PORT_PROTOCOLS:
        srcport, dstport = record.get("srcport"), record.get("dstport")
        if not isinstance(srcport, int) or not isinstance(dstport, int):
            return SkipReason.MISSING_FIELD
        flags = record.get("tcp-flags")
        tcp_flags = flags if isinstance(flags, int) else None
        if source_is_client(src, dst, srcport, dstport, protocol, tcp_flags):
            flow = Flow(src, dst, dstport, protocol)
        else:
            flow = Flow(dst, src, srcport, protocol)
    else:
        flow = Flow(src, dst, 0, protocol)
    if not flow_filter.keeps(flow.client_ip, flow.server_ip):
        return SkipReason.CIDR_FILTERED
    return flow
