"""Build flow-log lines in any format for tests."""

from __future__ import annotations

from flowexport.core.logformat import LogFormat

DEFAULTS: dict[str, str] = {
    "version": "5",
    "account-id": "123456789012",
    "interface-id": "eni-0a1b2c3d4e5f60718",
    "srcaddr": "10.0.1.15",
    "dstaddr": "10.0.2.40",
    "srcport": "48512",
    "dstport": "5432",
    "protocol": "6",
    "packets": "10",
    "bytes": "1500",
    "start": "1700000000",
    "end": "1700000060",
    "action": "ACCEPT",
    "log-status": "OK",
    "vpc-id": "vpc-0123456789abcdef0",
    "subnet-id": "subnet-0123456789abcdef0",
    "instance-id": "i-0123456789abcdef0",
    "tcp-flags": "0",
    "type": "IPv4",
    "pkt-srcaddr": "-",
    "pkt-dstaddr": "-",
    "flow-direction": "ingress",
}


def line(fmt: LogFormat, **values: object) -> str:
    """A line in `fmt`; keywords spell `-` as `_` (log_status=...); unset fields get defaults."""
    given = {k.replace("_", "-"): str(v) for k, v in values.items()}
    return " ".join(given.get(name, DEFAULTS.get(name, "-")) for name in fmt.fields)
