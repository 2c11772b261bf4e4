"""Synthetic VPC flow-log traffic, as AWS would deliver it to CloudWatch Logs (for demos).

A small estate of clients and servers talks over a fixed set of services. Each connection
produces what flow logs really show: the request leg (SYN) and the response leg (SYN-ACK) on
the client's ENI and again on the server's ENI; rejected attempts show only the request leg;
idle ENIs report NODATA now and then. Connections repeat, so records far outnumber flows.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from flowexport.core.logformat import LogFormat

#: (port, IANA protocol) of the services servers offer.
SERVICES: tuple[tuple[int, int], ...] = (
    (443, 6),
    (5432, 6),
    (22, 6),
    (3389, 6),
    (8080, 6),
    (6379, 6),
    (53, 17),
    (123, 17),
)
SYN, SYN_ACK = 2, 18
ACCOUNT = "123456789012"


@dataclass(frozen=True)
class Host:
    """An instance with one ENI."""

    ip: str
    eni: str
    instance: str


@dataclass(frozen=True)
class Record:
    """One flow-log record for one ENI's log stream."""

    stream: str
    message: str


@dataclass(frozen=True)
class Connection:
    """A client -> server service connection (the flow the PCE should receive)."""

    client: Host
    server: Host
    port: int
    protocol: int
    rejected: bool


class Traffic:
    """Generates records in `fmt` for a VPC of `clients` clients and `servers` servers."""

    def __init__(
        self,
        fmt: LogFormat,
        vpc_id: str,
        clients: int = 40,
        servers: int = 12,
        connections: int = 150,
        reject_share: float = 0.1,
        seed: int = 7,
    ) -> None:
        self.fmt = fmt
        self.vpc_id = vpc_id
        self.rng = random.Random(seed)
        self.clients = [_host(1, i) for i in range(clients)]
        self.servers = [_host(2, i) for i in range(servers)]
        self.connections = [self._connection(reject_share) for _ in range(connections)]
        self.written: set[Connection] = set()
        self._order: list[Connection] = []

    def _connection(self, reject_share: float) -> Connection:
        port, protocol = self.rng.choice(SERVICES)
        return Connection(
            self.rng.choice(self.clients),
            self.rng.choice(self.servers),
            port,
            protocol,
            rejected=self.rng.random() < reject_share,
        )

    def expected_flows(self, actions: frozenset[str]) -> set[tuple[str, str, int, int]]:
        """What the PCE should have: one flow per connection written whose action is kept."""
        return {
            (c.client.ip, c.server.ip, c.port, c.protocol)
            for c in self.written
            if ("REJECT" if c.rejected else "ACCEPT") in actions
        }

    def _next(self) -> Connection:
        """Every connection once per round, in a new order each round."""
        if not self._order:
            self._order = list(self.connections)
            self.rng.shuffle(self._order)
        connection = self._order.pop()
        self.written.add(connection)
        return connection

    def records(self, count: int, now: int) -> Iterator[Record]:
        """About `count` records for connections seen in the minute before `now` (seconds)."""
        produced = 0
        while produced < count:
            if self.rng.random() < 0.02:
                host = self.rng.choice(self.clients + self.servers)
                yield self._nodata(host, now)
                produced += 1
                continue
            for record in self._legs(self._next(), now):
                yield record
                produced += 1

    def _legs(self, c: Connection, now: int) -> Iterator[Record]:
        ephemeral = self.rng.randint(32768, 60999)
        tcp = c.protocol == 6
        action = "REJECT" if c.rejected else "ACCEPT"
        request = {
            "srcaddr": c.client.ip,
            "dstaddr": c.server.ip,
            "srcport": ephemeral,
            "dstport": c.port,
            "protocol": c.protocol,
            "action": action,
            "tcp-flags": SYN if tcp else 0,
        }
        response = {
            "srcaddr": c.server.ip,
            "dstaddr": c.client.ip,
            "srcport": c.port,
            "dstport": ephemeral,
            "protocol": c.protocol,
            "action": action,
            "tcp-flags": SYN_ACK if tcp else 0,
        }
        yield self._record(c.client, request, now, "egress")
        if c.rejected:
            return  # the server's security group dropped it: no answer, no server-side legs
        yield self._record(c.client, response, now, "ingress")
        yield self._record(c.server, request, now, "ingress")
        yield self._record(c.server, response, now, "egress")

    def _record(self, host: Host, values: dict[str, object], now: int, direction: str) -> Record:
        packets = self.rng.randint(1, 400)
        fields: dict[str, object] = {
            "version": 5,
            "account-id": ACCOUNT,
            "interface-id": host.eni,
            "packets": packets,
            "bytes": packets * self.rng.randint(60, 1500),
            "start": now - 60,
            "end": now,
            "log-status": "OK",
            "vpc-id": self.vpc_id,
            "subnet-id": "subnet-0demo",
            "instance-id": host.instance,
            "type": "IPv4",
            "pkt-srcaddr": values["srcaddr"],
            "pkt-dstaddr": values["dstaddr"],
            "flow-direction": direction,
            **values,
        }
        return Record(f"{host.eni}-all", self._line(fields))

    def _nodata(self, host: Host, now: int) -> Record:
        fields: dict[str, object] = {
            "version": 5,
            "account-id": ACCOUNT,
            "interface-id": host.eni,
            "start": now - 60,
            "end": now,
            "log-status": "NODATA",
            "vpc-id": self.vpc_id,
            "subnet-id": "subnet-0demo",
            "instance-id": host.instance,
        }
        return Record(f"{host.eni}-all", self._line(fields))

    def _line(self, fields: dict[str, object]) -> str:
        return " ".join(str(fields.get(name, "-")) for name in self.fmt.fields)


def _host(subnet: int, index: int) -> Host:
    suffix = f"{subnet:02x}{index:06x}"
    return Host(f"10.0.{subnet}.{index + 10}", f"eni-0demo{suffix}", f"i-0demo{suffix}")
