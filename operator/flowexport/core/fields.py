"""The VPC flow-log field table: every field AWS documents, by version, as data.

One table drives the format parser, the record parser and the default log format, in the way
Filebeat's VPC flow processor keeps its field list as data rather than code.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    """How a field's text is interpreted."""

    STR = "str"
    INT = "int"
    IP = "ip"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One flow-log field: its `${name}`, the version that introduced it, and its kind."""

    name: str
    version: int
    kind: Kind


def _fields(version: int, kind: Kind, names: str) -> list[FieldSpec]:
    return [FieldSpec(name, version, kind) for name in names.split()]


_S, _I, _A = Kind.STR, Kind.INT, Kind.IP

FIELDS: tuple[FieldSpec, ...] = tuple(
    _fields(2, _I, "version")
    + _fields(2, _S, "account-id interface-id")
    + _fields(2, _A, "srcaddr dstaddr")
    + _fields(2, _I, "srcport dstport protocol packets bytes start end")
    + _fields(2, _S, "action log-status")
    + _fields(3, _S, "vpc-id subnet-id instance-id")
    + _fields(3, _I, "tcp-flags")
    + _fields(3, _S, "type")
    + _fields(3, _A, "pkt-srcaddr pkt-dstaddr")
    + _fields(4, _S, "region az-id sublocation-type sublocation-id")
    + _fields(5, _S, "pkt-src-aws-service pkt-dst-aws-service flow-direction traffic-path")
    + _fields(
        6,
        _S,
        "resource-type tgw-id tgw-attachment-id tgw-src-vpc-account-id tgw-dst-vpc-account-id "
        "tgw-src-vpc-id tgw-dst-vpc-id tgw-src-subnet-id tgw-dst-subnet-id tgw-src-eni "
        "tgw-dst-eni tgw-src-az-id tgw-dst-az-id tgw-pair-attachment-id",
    )
    + _fields(
        6,
        _I,
        "packets-lost-no-route packets-lost-blackhole packets-lost-mtu-exceeded "
        "packets-lost-ttl-expired",
    )
    + _fields(
        7,
        _S,
        "ecs-cluster-arn ecs-cluster-name ecs-container-instance-arn ecs-container-instance-id "
        "ecs-container-id ecs-second-container-id ecs-service-name ecs-task-definition-arn "
        "ecs-task-arn ecs-task-id",
    )
    + _fields(8, _S, "reject-reason")
)

FIELDS_BY_NAME: dict[str, FieldSpec] = {f.name: f for f in FIELDS}

# The field tables below keep `# fmt: skip`: several names a line read as the AWS docs list them.
#: The AWS default format (version 2), in its fixed order.
DEFAULT_V2_FIELDS: tuple[str, ...] = (
    "version", "account-id", "interface-id", "srcaddr", "dstaddr", "srcport", "dstport",
    "protocol", "packets", "bytes", "start", "end", "action", "log-status",
)  # fmt: skip

#: Fields without which no flow can be derived.
REQUIRED_FIELDS: tuple[str, ...] = ("srcaddr", "dstaddr", "srcport", "dstport", "protocol")

#: The fields whose values decide a record's flow or its skip reason.
KEY_FIELDS: tuple[str, ...] = (
    "srcaddr", "dstaddr", "srcport", "dstport", "protocol", "action", "log-status", "tcp-flags",
    "pkt-srcaddr", "pkt-dstaddr",
)  # fmt: skip

#: Every field the pipeline reads, for the default custom format the operator asks AWS for.
#: The key fields come first: the processor then takes a line's key as one string prefix
#: instead of splitting the whole line (see core.processor). The rest are kept for people
#: reading the log group directly.
PIPELINE_FIELDS: tuple[str, ...] = (
    *KEY_FIELDS,
    "version", "account-id", "interface-id", "packets", "bytes", "start", "end", "vpc-id",
    "subnet-id", "instance-id", "type", "flow-direction",
)  # fmt: skip

NULL = "-"
