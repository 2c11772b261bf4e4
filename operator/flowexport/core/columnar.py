"""Flow-log records as columns: keys taken from a block of text lines or an Arrow record batch.

This is the only core module that imports numpy and pyarrow (about 150 ms of start-up), and
only `core.processor` imports it, when a processor is made: a command that reads no records
never loads them.

A record's *key* is the text of the fields that decide its flow or its skip reason (see
`fields.KEY_FIELDS`), joined by single spaces. Most records repeat a small set of keys, so the
work per record is only: find the key (numpy over the bytes of a block, or the Arrow columns of
a batch), give it a dense code per distinct key in the block (Arrow's hash kernels), and count
the codes. Python work is per distinct key not seen before (`core.processor` resolves it to a
flow or a skip reason) and per distinct flow per block.

Text lines are split exactly as the reference semantics say (see `line_split` in
`core.processor`): a line with the format's number of fields, single-space separated and
ending in a printable character, is *clean* and its key fields are cut out by position here;
every other line (blank, short, long, other whitespace, a line break in a CloudWatch message)
goes to a per-line path in Python. Keys of clean lines are Arrow `binary_view` values that
point into the block's own bytes: nothing is copied per line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from flowexport.core.direction import PORT_PROTOCOLS, TCP, TCP_ACK, TCP_SYN
from flowexport.core.fields import FIELDS_BY_NAME, Kind
from flowexport.core.normalise import FlowFilter
from flowexport.core.reasons import SkipReason
from flowexport.core.records import (
    COUNTER_MAX,
    MAX_ADDRESS_CHARS,
    MAX_INT_DIGITS,
    MAX_RECORD_CHARS,
    parse_ip,
)

Codes = npt.NDArray[np.int64]

_NEWLINE, _SPACE = 10, 32
_INLINE = 12  # a binary_view value of at most 12 bytes is stored inside its 16-byte view
_DENSE_LIMIT = 2**62


@dataclass
class Lines:
    """Where the lines of a block are, and which of them the columnar path takes.

    `clean` indexes the lines whose keys `views` cuts out; `slow` the lines that go
    through the per-line path; `too_long` counts lines over MAX_RECORD_CHARS characters.
    """

    count: int
    starts: npt.NDArray[np.int64]
    ends: npt.NDArray[np.int64]
    clean: npt.NDArray[np.int64]
    slow: npt.NDArray[np.int64]
    too_long: int
    first_space: npt.NDArray[np.int64]
    spaces: npt.NDArray[np.int64]


def split_block(
    data: bytes | memoryview, n_fields: int, ascii_only: bool, forced_slow: Sequence[int]
) -> Lines:
    """Find the lines of `data` (UTF-8, `\\n`-separated, the last line's break optional) and
    sort them into clean, slow and over-long ones.

    `forced_slow`: line numbers that go to the per-line path whatever they hold.
    """
    buf = np.frombuffer(data, np.uint8)
    # One pass finds the spaces and line breaks together: in `separators` (sorted), line i's
    # spaces lie between its line break and the one before.
    separators = np.flatnonzero(buf <= _SPACE)
    kinds = buf[separators]
    at_break = np.flatnonzero(kinds == _NEWLINE)
    if np.count_nonzero(kinds < _SPACE) != len(at_break):  # tabs, other control bytes
        wanted = (kinds == _SPACE) | (kinds == _NEWLINE)
        separators, kinds = separators[wanted], kinds[wanted]
        at_break = np.flatnonzero(kinds == _NEWLINE)
    ends = separators[at_break]
    if len(buf) and buf[-1] != _NEWLINE:  # the last line has no line break
        ends = np.append(ends, len(buf))
        at_break = np.append(at_break, len(separators))
    count = len(ends)
    starts = np.empty(count, np.int64)
    first_space = np.empty(count, np.int64)
    if count:
        starts[0] = first_space[0] = 0
        starts[1:] = ends[:-1] + 1
        first_space[1:] = at_break[:-1] + 1
    lengths = ends - starts
    too_long = np.zeros(count, bool)
    long_lines = np.flatnonzero(lengths > MAX_RECORD_CHARS)
    if len(long_lines):
        if ascii_only:
            too_long[long_lines] = True
        else:  # bytes over the limit, characters maybe not: count the characters
            for i in long_lines.tolist():
                too_long[i] = len(str(data[starts[i] : ends[i]], "utf-8")) > MAX_RECORD_CHARS
    last = buf[np.maximum(ends - 1, 0)]
    # Clean: the format's field count, single spaces, and a last byte that is printable
    # ASCII (no trailing whitespace to strip, the last field not empty).
    clean = (at_break - first_space == n_fields - 1) & (last > _SPACE) & (last < 127)
    clean &= (lengths > 0) & ~too_long
    if forced_slow:
        clean[np.asarray(forced_slow, np.int64)] = False
    slow = ~clean & ~too_long
    return Lines(
        count=count,
        starts=starts,
        ends=ends,
        clean=np.flatnonzero(clean),
        slow=np.flatnonzero(slow),
        too_long=int(np.count_nonzero(too_long)),
        first_space=first_space,
        spaces=separators,
    )


Bounds = list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]


def run_bounds(lines: Lines, n_fields: int, runs: Sequence[tuple[int, int]]) -> Bounds:
    """Where each run of adjacent key fields `[a, b)` starts and ends in every clean line."""
    clean = lines.clean
    first = lines.first_space[clean]
    bounds = []
    for a, b in runs:
        start = lines.starts[clean] if a == 0 else lines.spaces[first + (a - 1)] + 1
        end = lines.ends[clean] if b == n_fields else lines.spaces[first + (b - 1)]
        bounds.append((start, end))
    return bounds


def over_long(bounds: Bounds, widest: Sequence[int]) -> npt.NDArray[np.bool_]:
    """The clean lines with a run longer than any valid value of its fields can make
    (`widest[i]`: the longest valid text of run i): such a line is malformed, and goes per
    line so that no long key is ever made or held."""
    over = np.zeros(len(bounds[0][0]) if bounds else 0, bool)
    for (start, end), most in zip(bounds, widest, strict=True):
        over |= end - start > most
    return over


#: A mask keeping the low k bytes of a 64-bit word, for k = 0..8.
_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(9)], np.uint64)

#: Bytes readable after the end of a block's data that `views` may read.
PADDING = 16


def views(buffer: bytes | bytearray, bounds: Bounds) -> list[pa.Array]:
    """The runs' texts as `binary_view` values pointing into `buffer`, which holds the block
    and at least PADDING more bytes (read, never used)."""
    # Item i of `words` is the 8 bytes from byte i: one gather reads 8 bytes of every value.
    words = np.ndarray(shape=(len(buffer) - 8,), dtype="V8", buffer=buffer, strides=(1,))
    arrow = pa.py_buffer(buffer)
    return [_views(words, arrow, start, end - start) for start, end in bounds]


def _views(
    words: npt.NDArray[np.void],
    buffer: pa.Buffer,
    start: npt.NDArray[np.int64],
    length: npt.NDArray[np.int64],
) -> pa.Array:
    """A binary_view array of the byte ranges `[start, start + length)` of `buffer`.

    A view is 16 bytes: the length (int32) and either the value itself (up to 12 bytes,
    zero-padded) or its first 4 bytes, the buffer's index (0) and the offset (int32)."""
    count = len(start)
    low = words[start].view("<u8")  # bytes 0-7 of each value
    high = words[start + 8].view("<u8")  # bytes 8-15
    view = np.empty((count, 2), np.uint64)
    view[:, 0] = length.astype(np.uint64) | (low & _LOW_BYTES[np.minimum(length, 4)]) << 32
    inline = (low >> 32 | high << 32) & _LOW_BYTES[np.clip(length - 4, 0, 8)]
    view[:, 1] = np.where(length <= _INLINE, inline, start.astype(np.uint64) << 32)
    return pa.Array.from_buffers(pa.binary_view(), count, [None, pa.py_buffer(view), buffer])


def widest_value(name: str) -> int:
    """The longest text a valid value of a key field can have."""
    kind = FIELDS_BY_NAME[name].kind
    if kind is Kind.IP:
        return MAX_ADDRESS_CHARS
    if kind is Kind.INT:
        return MAX_INT_DIGITS
    return max(map(len, _ENUMS.get(name, ("-",))))


def encode(values: pa.Array) -> tuple[pa.Array, Codes]:
    """Dense codes of `values` in order of first appearance, and the distinct values (null,
    if there, one of them). A dictionary array (Parquet's dictionary pages) is renumbered by
    its integer codes, its text never hashed again."""
    if pa.types.is_dictionary(values.type):
        dictionary, indices = values.dictionary, values.indices
        if indices.null_count:
            indices = pc.fill_null(indices, len(dictionary))
            dictionary = pa.concat_arrays([dictionary, pa.nulls(1, dictionary.type)])
        used, codes = encode(indices)
        return dictionary.take(used), codes
    encoded = pc.dictionary_encode(values, null_encoding="encode")
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return encoded.dictionary, codes


def combine(parts: Sequence[tuple[pa.Array, Codes]]) -> tuple[Codes, Codes]:
    """One dense code per distinct combination of the parts' codes, in order of first
    appearance, and the row where each combination first appears."""
    dictionary, combined = parts[0]
    size = len(dictionary)
    for dictionary, codes in parts[1:]:
        if size * max(1, len(dictionary)) >= _DENSE_LIMIT:
            _, combined = encode(pa.array(combined))
            size = int(combined.max()) + 1 if len(combined) else 1
        combined = combined * len(dictionary) + codes
        size *= max(1, len(dictionary))
    if len(parts) > 1:
        _, combined = encode(pa.array(combined))
    return combined, first_rows(combined)


def first_rows(codes: Codes) -> Codes:
    """The row where each code first appears, for codes numbered in order of appearance."""
    if not len(codes):
        return np.zeros(0, np.int64)
    highest = np.maximum.accumulate(codes)
    new = np.empty(len(codes), bool)
    new[0] = True
    np.greater(highest[1:], highest[:-1], out=new[1:])
    return np.flatnonzero(new)


def distinct_keys(parts: Sequence[tuple[pa.Array, Codes]], first: Codes) -> pa.Array:
    """The key text of each distinct combination: its parts' values joined by spaces."""
    if len(parts) == 1:  # its codes are the combination's: the dictionary is in that order
        return _as_binary(parts[0][0])
    values = [pc.take(_as_binary(d), pa.array(codes[first])) for d, codes in parts]
    return pc.binary_join_element_wise(*values, b" ")


def _as_binary(values: pa.Array) -> pa.Array:
    if values.type == pa.binary():
        return values
    return values.cast(pa.binary())


def column_text(column: pa.Array) -> pa.Array:
    """A Parquet column's values as the text a flow-log line would hold: integers in decimal,
    null as `-`, and a space inside a value as NUL (no key field may hold either, so the
    value stays exactly as malformed, and a key's spaces stay field separators)."""
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        text = column.cast(pa.binary())
    else:
        text = column.cast(pa.string())
    text = pc.fill_null(text, "-" if pa.types.is_string(text.type) else b"-")
    text = pc.replace_substring(text, " ", "\x00")
    return text.cast(pa.binary())


class KeyTable:
    """Keys resolved before, with their results (a flow id, or a negative skip code).

    A Python dict: a lookup costs per key looked up (a block's distinct keys, fed from C by
    `map`), not per key held, so a small block (500 CloudWatch events) costs little however
    many keys are held."""

    def __init__(self) -> None:
        self._results: dict[bytes, int] = {}
        self.nbytes = 0

    @property
    def count(self) -> int:
        """Keys held."""
        return len(self._results)

    def lookup(self, keys: pa.Array, missing: int) -> npt.NDArray[np.int64]:
        """Each key's result, `missing` for keys not in the table."""
        texts = keys.to_pylist()
        found = map(self._results.get, texts, repeat(missing, len(texts)))
        return np.fromiter(found, np.int64, len(texts))

    def add(self, keys: pa.Array, results: npt.NDArray[np.int64], overhead: int) -> None:
        """Remember resolved keys; `overhead` bytes are counted per key beside its text."""
        texts = keys.to_pylist()
        self._results.update(zip(texts, results.tolist(), strict=True))
        self.nbytes += sum(map(len, texts)) + overhead * len(texts)

    def held(self) -> list[bytes]:
        """The keys held (for tests and debugging)."""
        return list(self._results)

    def clear(self) -> None:
        """Forget every key."""
        self._results.clear()
        self.nbytes = 0


# -- resolving distinct keys on columns ------------------------------------------------------
#
# The same rules as `records.parse_values` then `normalise.normalise`, one column at a time over
# the distinct keys of a block (tests/core/test_columnar.py holds them to the per-record
# functions): the first malformed field in format order names the skip reason, a NODATA or
# SKIPDATA status wins over it, then the action filter, missing fields, address families,
# direction, CIDR filters.

#: `resolve` gives, per key, the index of its skip reason in this tuple, or FLOW.
FLOW = -1
_REASON_AT = {reason: i for i, reason in enumerate(SkipReason)}
_DIGITS = rf"^[0-9]{{1,{MAX_INT_DIGITS}}}$"
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"^{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}$"
_INT_MAX = {"srcport": 65535, "dstport": 65535, "protocol": 255, "tcp-flags": 511}
_ENUMS = {"action": ("ACCEPT", "REJECT"), "log-status": ("OK", "NODATA", "SKIPDATA")}
_FIELD_NAMES = pa.array(sorted(FIELDS_BY_NAME))
_PORT_PROTOCOLS = np.array(sorted(PORT_PROTOCOLS), np.int64)


@dataclass
class Resolved:
    """What each key gives: `reason` (an index into SkipReason, or FLOW) and, for flows, the
    client and server (indices into `addresses`), service port and protocol."""

    reason: npt.NDArray[np.int64]
    client: npt.NDArray[np.int64]
    server: npt.NDArray[np.int64]
    port: npt.NDArray[np.int64]
    protocol: npt.NDArray[np.int64]
    addresses: list[str | None]


def key_fields(keys: pa.Array, count: int) -> list[pa.Array] | None:
    """The `count` space-separated fields of each key, one string array per field; None when
    some key does not have exactly that many."""
    pieces = pc.split_pattern(keys, b" ")
    if len(keys) and not pc.all(pc.equal(pc.list_value_length(pieces), count)).as_py():
        return None
    flat = pieces.flatten()
    base = np.arange(len(keys), dtype=np.int64) * count
    return [_as_text(flat.take(pa.array(base + j))) for j in range(count)]


def _as_text(values: pa.Array) -> pa.Array:
    try:
        return values.cast(pa.string())
    except pa.ArrowInvalid:  # not UTF-8 (a binary Parquet column): as the text reader would
        texts = [v.decode("utf-8", "replace") for v in values.to_pylist()]
        return pa.array(texts, pa.string())


def _np(values: pa.Array) -> Any:
    return values.to_numpy(zero_copy_only=False)


def resolve(names: Sequence[str], fields: Sequence[pa.Array], flow_filter: FlowFilter) -> Resolved:
    """Resolve keys given as one string array per key field (`names`, in format order)."""
    count = len(fields[0]) if fields else 0
    column = dict(zip(names, fields, strict=True))
    reason = np.full(count, FLOW, np.int64)
    null = {name: _np(pc.equal(values, "-")) for name, values in column.items()}

    # Parse: each field's value, and the first malformed field in format order.
    ints: dict[str, npt.NDArray[np.int64]] = {}
    ips: dict[str, npt.NDArray[np.int64]] = {}
    bad = np.full(count, FLOW, np.int64)
    address_names = [n for n in names if FIELDS_BY_NAME[n].kind is Kind.IP]
    addresses, address_at = _addresses([column[n] for n in address_names])
    for name in reversed(names):
        values, kind = column[name], FIELDS_BY_NAME[name].kind
        if kind is Kind.INT:
            number, ok = _integers(values, _INT_MAX.get(name, COUNTER_MAX))
            ints[name] = number
            failed, why = ~ok, SkipReason.BAD_INT
        elif kind is Kind.IP:
            at = address_at[address_names.index(name)]
            ips[name] = at
            failed, why = at < 0, SkipReason.BAD_IP
        else:
            allowed = _ENUMS.get(name)
            failed = (
                ~_np(pc.is_in(values, value_set=pa.array(allowed)))
                if allowed is not None
                else np.zeros(count, bool)
            )
            why = SkipReason.BAD_VALUE
        bad[failed & ~null[name]] = _REASON_AT[why]
    reason[:] = bad
    if "log-status" in column:
        status = column["log-status"]
        reason[_np(pc.equal(status, "NODATA"))] = _REASON_AT[SkipReason.NODATA]
        reason[_np(pc.equal(status, "SKIPDATA"))] = _REASON_AT[SkipReason.SKIPDATA]
    header = np.ones(count, bool)
    for values in fields:
        header &= _np(pc.is_in(values, value_set=_FIELD_NAMES))
    reason[header] = _REASON_AT[SkipReason.HEADER]

    # Normalise what parsed.
    open_ = reason == FLOW
    if "action" in column:
        action = column["action"]
        kept = _np(pc.is_in(action, value_set=pa.array(sorted(flow_filter.actions))))
        _set(reason, open_ & ~null["action"] & ~kept, SkipReason.ACTION_FILTERED)
    none = np.full(count, -1, np.int64)
    src = _first_of(ips, null, ("pkt-srcaddr", "srcaddr"), none)
    dst = _first_of(ips, null, ("pkt-dstaddr", "dstaddr"), none)
    protocol = ints.get("protocol", none)
    protocol = np.where(null["protocol"], -1, protocol)
    _set(reason, (src < 0) | (dst < 0) | (protocol < 0), SkipReason.MISSING_FIELD)
    v6 = np.zeros(max(1, len(addresses)), bool)
    v6[: len(addresses)] = _np(pc.match_substring(pa.array(addresses, pa.string()), ":"))
    _set(reason, v6[np.maximum(src, 0)] != v6[np.maximum(dst, 0)], SkipReason.BAD_IP)
    ported = np.isin(protocol, _PORT_PROTOCOLS)
    srcport = np.where(null["srcport"], -1, ints["srcport"])
    dstport = np.where(null["dstport"], -1, ints["dstport"])
    _set(reason, ported & ((srcport < 0) | (dstport < 0)), SkipReason.MISSING_FIELD)
    flags = ints.get("tcp-flags")
    if flags is not None:
        flags = np.where(null["tcp-flags"], 0, flags)
    forward = _source_is_client(addresses, src, dst, srcport, dstport, protocol, flags)
    forward |= ~ported
    client = np.where(forward, src, dst)
    server = np.where(forward, dst, src)
    port = np.where(ported, np.where(forward, dstport, srcport), 0)
    if flow_filter.include or flow_filter.exclude:
        keeps = _cidr_keeps(addresses, client, server, reason == FLOW, flow_filter)
        _set(reason, ~keeps, SkipReason.CIDR_FILTERED)
    return Resolved(reason, client, server, port, protocol, addresses)


def _set(reason: npt.NDArray[np.int64], where: npt.NDArray[np.bool_], why: SkipReason) -> None:
    """Give `why` to the keys where `where` holds that no earlier rule has skipped."""
    reason[where & (reason == FLOW)] = _REASON_AT[why]


def _first_of(
    ips: dict[str, npt.NDArray[np.int64]],
    null: dict[str, npt.NDArray[np.bool_]],
    names: tuple[str, str],
    none: npt.NDArray[np.int64],
) -> npt.NDArray[np.int64]:
    """The first of two address fields that is present (packet-level over the ENI's)."""
    chosen = none
    for name in reversed(names):
        if name in ips:
            chosen = np.where(null[name], chosen, ips[name])
    return chosen


def _integers(values: pa.Array, highest: int) -> tuple[npt.NDArray[np.int64], Any]:
    """Integer values (ASCII digits, at most MAX_INT_DIGITS, at most `highest`), and where
    they are valid."""
    digits = _np(pc.match_substring_regex(values, _DIGITS))
    trimmed = pc.utf8_ltrim(values, characters="0")
    width = len(str(highest))
    short = digits & (_np(pc.utf8_length(trimmed)) <= width)
    usable = pc.if_else(pa.array(short), trimmed, "0")
    usable = pc.if_else(pc.equal(usable, ""), "0", usable)
    number = _np(usable.cast(pa.int64())).astype(np.int64, copy=False)
    return number, short & (number <= highest)


def _addresses(columns: Sequence[pa.Array]) -> tuple[list[str | None], list[Any]]:
    """The canonical spellings of the distinct addresses of the columns (None where a value
    is not an address), and each column's values as indices into them (-1: not an address)."""
    if not columns:
        return [], []
    distinct = pc.unique(pa.concat_arrays(columns))
    # A dotted quad without leading zeros is its own canonical spelling; others ask Python.
    quad = _np(pc.match_substring_regex(distinct, _IPV4))
    canonical: list[str | None] = distinct.to_pylist()
    for i in np.flatnonzero(~quad).tolist():
        canonical[i] = parse_ip(canonical[i])  # type: ignore[arg-type]
    # One index per canonical address (IPv6 has several spellings); -1 where none.
    dictionary, index = encode(pa.array(canonical, pa.string()))
    if dictionary.null_count:  # null_encoding="encode" made None a value of its own
        none = dictionary.is_null().to_numpy(zero_copy_only=False)
        kept = np.flatnonzero(~none)
        renumber = np.full(len(dictionary), -1, np.int64)
        renumber[kept] = np.arange(len(kept))
        dictionary, index = dictionary.filter(pa.array(~none)), renumber[index]
    addresses: list[str | None] = dictionary.to_pylist()
    at = [index[_np(pc.index_in(values, value_set=distinct))] for values in columns]
    return addresses, at


def _source_is_client(
    addresses: list[str | None],
    src: npt.NDArray[np.int64],
    dst: npt.NDArray[np.int64],
    srcport: npt.NDArray[np.int64],
    dstport: npt.NDArray[np.int64],
    protocol: npt.NDArray[np.int64],
    flags: npt.NDArray[np.int64] | None,
) -> npt.NDArray[np.bool_]:
    """`direction.source_is_client` on columns."""
    src_rank, dst_rank = _port_rank(srcport), _port_rank(dstport)
    by_ports = np.where(src_rank != dst_rank, dst_rank < src_rank, dstport < srcport)
    equal = (src_rank == dst_rank) & (srcport == dstport)
    if equal.any():
        spelled = pa.array(addresses, pa.string())
        order = _np(
            pc.sort_indices(
                pa.table({"length": pc.utf8_length(spelled), "text": spelled}),
                sort_keys=[("length", "ascending"), ("text", "ascending")],
            )
        )
        rank = np.empty(max(1, len(addresses)), np.int64)
        rank[order] = np.arange(len(order))
        by_address = rank[np.maximum(src, 0)] <= rank[np.maximum(dst, 0)]
        by_ports = np.where(equal, by_address, by_ports)
    if flags is None:
        return by_ports
    tcp = (protocol == TCP) & (flags != 0)
    synack = (flags & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK)
    syn = (flags & TCP_SYN) != 0
    return np.where(tcp & synack, False, np.where(tcp & syn, True, by_ports))


def _port_rank(port: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """`direction.port_rank` on a column."""
    ephemeral = ((port >= 32768) & (port <= 60999)) | ((port >= 49152) & (port <= 65535))
    old_windows = (port >= 1025) & (port <= 5000)
    return np.where(port < 1024, 0, np.where(ephemeral, 3, np.where(old_windows, 2, 1)))


def _cidr_keeps(
    addresses: list[str | None],
    client: npt.NDArray[np.int64],
    server: npt.NDArray[np.int64],
    open_: npt.NDArray[np.bool_],
    flow_filter: FlowFilter,
) -> npt.NDArray[np.bool_]:
    """The CIDR rules, once per distinct address pair of the keys still open."""
    keeps = np.ones(len(client), bool)
    pairs: dict[tuple[int, int], bool] = {}
    for i in np.flatnonzero(open_).tolist():
        pair = (int(client[i]), int(server[i]))
        kept = pairs.get(pair)
        if kept is None:
            a, b = addresses[pair[0]], addresses[pair[1]]
            kept = pairs[pair] = a is not None and b is not None and flow_filter.keeps(a, b)
        keeps[i] = kept
    return keeps
