"""Decode the Kubernetes protobuf encoding of the few core objects kubectl sends that way.

kubectl sends built-in objects (Namespace, Secret, ConfigMap) as
`application/vnd.kubernetes.protobuf`: the magic `k8s\\0`, then a `runtime.Unknown` holding
the type and the object's own message. Field numbers come from k8s.io/api's generated.proto.
"""

from __future__ import annotations

import base64
from typing import Any

MAGIC = b"k8s\x00"

# ObjectMeta fields the simulator keeps (number -> (name, kind)).
_META = {
    1: ("name", "str"),
    2: ("generateName", "str"),
    3: ("namespace", "str"),
    11: ("labels", "map"),
    12: ("annotations", "map"),
    14: ("finalizers", "list"),
}
# Per kind: field number -> (name, kind); "meta" is ObjectMeta, "bmap" a map of bytes.
_KINDS: dict[str, dict[int, tuple[str, str]]] = {
    "Namespace": {1: ("metadata", "meta")},
    "Secret": {
        1: ("metadata", "meta"),
        2: ("data", "bmap"),
        3: ("type", "str"),
        4: ("stringData", "map"),
        5: ("immutable", "bool"),
    },
    "ConfigMap": {1: ("metadata", "meta"), 2: ("data", "map"), 4: ("immutable", "bool")},
}


class ProtobufError(ValueError):
    """Bytes that are not a decodable Kubernetes protobuf object."""


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """The (field number, value) pairs of one message; values are ints or raw bytes."""
    out: list[tuple[int, int | bytes]] = []
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _varint(data, position)
            out.append((number, value))
        elif wire == 2:
            length, position = _varint(data, position)
            if position + length > len(data):
                raise ProtobufError("truncated field")
            out.append((number, data[position : position + length]))
            position += length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            out.append((number, data[position : position + size]))
            position += size
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
    return out


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7


def _entry(raw: bytes) -> tuple[str, bytes]:
    key, value = "", b""
    for number, item in _fields(raw):
        if number == 1 and isinstance(item, bytes):
            key = item.decode()
        elif number == 2 and isinstance(item, bytes):
            value = item
    return key, value


def _decode(raw: bytes, table: dict[int, tuple[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for number, value in _fields(raw):
        if number not in table:
            continue
        name, kind = table[number]
        if kind == "str" and isinstance(value, bytes):
            out[name] = value.decode()
        elif kind == "bool" and isinstance(value, int):
            out[name] = bool(value)
        elif kind == "meta" and isinstance(value, bytes):
            out[name] = _decode(value, _META)
        elif kind in ("map", "bmap") and isinstance(value, bytes):
            key, item = _entry(value)
            text = base64.b64encode(item).decode() if kind == "bmap" else item.decode()
            out.setdefault(name, {})[key] = text
        elif kind == "list" and isinstance(value, bytes):
            out.setdefault(name, []).append(value.decode())
    return out


def decode_object(body: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf-encoded Namespace, Secret or ConfigMap."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf magic")
    api_version = kind = ""
    raw = b""
    for number, value in _fields(body[len(MAGIC) :]):
        if number == 1 and isinstance(value, bytes):
            for sub, item in _fields(value):
                if sub == 1 and isinstance(item, bytes):
                    api_version = item.decode()
                elif sub == 2 and isinstance(item, bytes):
                    kind = item.decode()
        elif number == 2 and isinstance(value, bytes):
            raw = value
    table = _KINDS.get(kind)
    if table is None:
        raise ProtobufError(f"the simulator cannot decode {kind or 'this object'} from protobuf")
    return {"apiVersion": api_version, "kind": kind, **_decode(raw, table)}
