"""The unit the PCE receives: one (client, server, service port, protocol) flow."""

from __future__ import annotations

from typing import NamedTuple


class Flow(NamedTuple):
    """A directed flow: `client_ip` connects to `server_ip` on `server_port` over `protocol`.

    Addresses are canonical text (compressed IPv6), so one address has one spelling.
    `server_port` is 0 for protocols without ports (ICMP, ICMPv6, GRE, ESP...).
    """

    client_ip: str
    server_ip: str
    server_port: int
    protocol: int
