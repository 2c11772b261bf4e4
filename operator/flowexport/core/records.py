"""Parse one flow-log line into typed values, driven by the field table. Never raises."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

from flowexport.core.fields import FIELDS_BY_NAME, NULL, Kind
from flowexport.core.logformat import LogFormat
from flowexport.core.reasons import SkipReason

Value = str | int | None
Record = dict[str, Value]

ACTIONS = frozenset({"ACCEPT", "REJECT"})
LOG_STATUSES = frozenset({"OK", "NODATA", "SKIPDATA"})

#: The longest record (in characters, its line break not counted) that is parsed; longer ones
#: are `too_long`. The longest real record, every field of versions 2-8 at its maximum (ECS
#: ARNs and names of up to 255 characters), is about 3,000 characters; a default-format record
#: about 120. 8 KiB leaves room for fields AWS may add while bounding what one line can cost:
#: file input never holds a longer line whole (see flowexport.core.textfile).
MAX_RECORD_CHARS = 8192

#: The longest address text: `ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`.
MAX_ADDRESS_CHARS = 45

#: The most digits an integer field may have: a 64-bit counter's 19, and one leading zero.
MAX_INT_DIGITS = 20

# Upper bounds for integer fields; anything else is a non-negative 64-bit counter.
_INT_MAX = {"srcport": 65535, "dstport": 65535, "protocol": 255, "tcp-flags": 511}
COUNTER_MAX = 2**63 - 1
_ENUMS = {"action": ACTIONS, "log-status": LOG_STATUSES}
_KINDS = {name: spec.kind for name, spec in FIELDS_BY_NAME.items()}


def too_long(line: str) -> bool:
    """True when a line is longer than MAX_RECORD_CHARS, its line break not counted."""
    return len(line) > MAX_RECORD_CHARS and len(line.rstrip("\r\n")) > MAX_RECORD_CHARS


def parse_ip(text: str) -> str | None:
    """The canonical (compressed) text of an IPv4/IPv6 address, or None if it is not one.

    Scoped IPv6 (`fe80::1%eth0`) is refused: flow logs never carry it, and it is the one
    spelling that could make a cached address as long as a line.
    """
    if len(text) > MAX_ADDRESS_CHARS or "%" in text:
        return None
    return _parse_ip(text)


@lru_cache(maxsize=65536)  # addresses repeat across records far more than keys do
def _parse_ip(text: str) -> str | None:
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        return None


def parse_int(text: str, name: str) -> int | None:
    """The value of an integer field, or None if it is not a number within the field's range.

    Only up to MAX_INT_DIGITS ASCII digits count: `int()` alone would also take `+443`, `4_43`
    and `٤٤٣`.
    """
    if len(text) > MAX_INT_DIGITS or not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= _INT_MAX.get(name, COUNTER_MAX) else None


def parse_values(names: Sequence[str], texts: Sequence[str]) -> Record | SkipReason:
    """Convert the texts of the named fields: `-` to None, ints, canonical IPs, enums checked.

    A NODATA/SKIPDATA `log-status` wins over everything else, since such records carry `-` in
    the flow fields by design.
    """
    record: Record = {}
    for name, text in zip(names, texts, strict=True):
        if text == NULL:
            record[name] = None
            continue
        kind = _KINDS[name]
        if kind is Kind.INT:
            number = parse_int(text, name)
            if number is None:
                return _status_or(names, texts, SkipReason.BAD_INT)
            record[name] = number
        elif kind is Kind.IP:
            address = parse_ip(text)
            if address is None:
                return _status_or(names, texts, SkipReason.BAD_IP)
            record[name] = address
        else:
            allowed = _ENUMS.get(name)
            if allowed is not None and text not in allowed:
                return _status_or(names, texts, SkipReason.BAD_VALUE)
            record[name] = text
    status = record.get("log-status")
    if status == "NODATA":
        return SkipReason.NODATA
    if status == "SKIPDATA":
        return SkipReason.SKIPDATA
    return record


def _status_or(names: Sequence[str], texts: Sequence[str], reason: SkipReason) -> SkipReason:
    """NODATA/SKIPDATA if the line says so, else the malformation found."""
    for name, text in zip(names, texts, strict=True):
        if name == "log-status":
            if text == "NODATA":
                return SkipReason.NODATA
            if text == "SKIPDATA":
                return SkipReason.SKIPDATA
    return reason


def is_header(tokens: Sequence[str]) -> bool:
    """True for a header line of field names, as in flow logs delivered to S3."""
    return bool(tokens) and all(t in FIELDS_BY_NAME for t in tokens)


def parse_line(line: str, fmt: LogFormat) -> Record | SkipReason:
    """Parse one flow-log line in `fmt` into typed values, or the reason it is skipped."""
    if too_long(line):
        return SkipReason.TOO_LONG
    tokens = line.split()
    if not tokens:
        return SkipReason.EMPTY
    if is_header(tokens):
        return SkipReason.HEADER
    if len(tokens) != len(fmt.fields):
        return SkipReason.FIELD_COUNT
    return parse_values(fmt.fields, tokens)
