"""Build flow-log lines in any format for tests."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from flowexport.core.logformat import PIPELINE_FORMAT, LogFormat

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


def connection_address(i: int) -> str:
    """The client address of connection `i` of `put_connections` (10.0.0.1, 10.0.0.2, ...)."""
    n = i + 1
    return f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"


def put_connections(
    logs: Any,
    group: str,
    count: int,
    start: int = 0,
    stream: str = "eni-a-all",
    fmt: LogFormat = PIPELINE_FORMAT,
    **values: object,
) -> None:
    """Write `count` client connections (`connection_address(i)`:<port> -> 10.1.0.9:443) to a
    log group as CloudWatch Logs events in the pipeline's format, creating the stream if
    needed."""
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now = int(time.time() * 1000)
    events = [
        {
            "timestamp": now,
            "message": line(
                fmt,
                srcaddr=connection_address(i),
                dstaddr="10.1.0.9",
                srcport=40000 + i % 20000,
                dstport=443,
                **values,
            ),
        }
        for i in range(start, start + count)
    ]
    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)
