"""Who is the client: pick the service port of a flow-log record (pure rules, no I/O).

Every connection is logged once per direction (and per ENI). Only the client -> server leg is
a real flow; the response leg would invent a flow to the client's ephemeral port.
"""

from __future__ import annotations

#: IANA protocol numbers whose records carry meaningful ports.
PORT_PROTOCOLS = frozenset({6, 17, 33, 132, 136})  # TCP, UDP, DCCP, SCTP, UDP-Lite

TCP = 6
TCP_SYN = 0x02
TCP_ACK = 0x10

# Ephemeral (client) port ranges: Linux, IANA/modern Windows/BSD, older Windows.
_LINUX = (32768, 60999)
_IANA = (49152, 65535)
_OLD_WINDOWS = (1025, 5000)


def port_rank(port: int) -> int:
    """How likely `port` is a client's ephemeral port: 0 well-known ... 3 surely ephemeral."""
    if port < 1024:
        return 0
    if _LINUX[0] <= port <= _LINUX[1] or _IANA[0] <= port <= _IANA[1]:
        return 3
    if _OLD_WINDOWS[0] <= port <= _OLD_WINDOWS[1]:
        return 2
    return 1


def source_is_client(
    src: str, dst: str, srcport: int, dstport: int, protocol: int, tcp_flags: int | None
) -> bool:
    """True when the record's source is the client (its destination port is the service).

    TCP flags decide first: SYN alone marks the request leg, SYN-ACK the response leg
    (AWS's own examples). Otherwise the port that looks less ephemeral is the service port,
    the lower one on a tie; equal ports (NTP 123 <-> 123, DNS 53 <-> 53) fall back to the
    lower address as client so both legs still give one flow.
    """
    if protocol == TCP and tcp_flags:
        if tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK:
            return False
        if tcp_flags & TCP_SYN:
            return True
    src_rank, dst_rank = port_rank(srcport), port_rank(dstport)
    if src_rank != dst_rank:
        return dst_rank < src_rank
    if srcport != dstport:
        return dstport < srcport
    return _address_key(src) <= _address_key(dst)


def _address_key(address: str) -> tuple[int, str]:
    return (len(address), address)
