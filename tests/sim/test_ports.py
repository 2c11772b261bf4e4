"""Free ports for the stand-ins: distinct when several are asked for at once."""

from __future__ import annotations

import socket

from flowexport.sim.moto import free_port, free_ports


def test_ports_asked_together_are_distinct_and_bindable() -> None:
    ports = free_ports(64)
    assert len(set(ports)) == 64
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))
