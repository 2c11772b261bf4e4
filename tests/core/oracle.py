"""The test oracle: the per-line processor the columnar core replaced (issue 25), kept as it
was at 7da4844 but for the fix of its two pinned bugs (`_clean_lines` below: a line whose
trailing whitespace hides a missing field is not clean). tests/core/test_differential.py
demands the same flows, skip reasons and counts from the columnar core.

The original docstring follows.

The hot path: flow-log lines in, aggregated flows and counts out.

Most lines repeat a small set of connections; only packets, bytes and times change. So a
line is reduced to a key made of the fields that decide its flow (addresses, ports,
protocol, action, status, TCP flags); each key is looked up in a cache that resolves a key seen
for the first time through the same parser and normaliser as any other record, and the result
is counted into the window's table, all by C-level iteration (`map`, `itemgetter`,
`Counter.update`'s counter). Python-level work is per distinct key, not per line.

Two ways to take the key, chosen by the format:
- prefix: when the key fields lead the format (the operator's default format is built so),
  the key is the line's leading text up to the last key field, one string slice;
- fields: otherwise, the key fields' tokens from a split, joined by single spaces (one string
  hashes once; a tuple of fresh tokens hashes each of them).
Lines that are not cleanly single-space separated, or have the wrong number of fields, go
through a per-line path that gives the same canonical key or a skip reason.

Memory follows neither line length nor the number of distinct lines: a record longer than
MAX_RECORD_CHARS is counted `too_long` before any key is taken from it, and the key cache is
emptied when it holds too many keys or too many bytes of them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import filterfalse, islice, repeat
from operator import itemgetter, methodcaller, sub
from sys import getsizeof
from typing import Any, cast

from flowexport.core.aggregate import Aggregator
from flowexport.core.fields import KEY_FIELDS
from flowexport.core.flows import Flow
from flowexport.core.logformat import LogFormat
from flowexport.core.normalise import FlowFilter, normalise
from flowexport.core.reasons import SkipReason
from flowexport.core.records import MAX_RECORD_CHARS, is_header, parse_values, too_long

#: Resolved keys kept before the cache is emptied (it may hold one chunk more); bounds
#: memory on high-churn logs.
DEFAULT_CACHE_SIZE = 200_000

#: Bytes of keys kept before the cache is emptied (it may hold one chunk more): the bound
#: when keys are long. A real key takes about 100 bytes.
DEFAULT_CACHE_BYTES = 32 * 2**20

#: Lines handled at a time: bounds the transient memory of a chunk, its keys and tokens
#: (at most 1024 lines of MAX_RECORD_CHARS each). Larger chunks are no faster.
CHUNK_LINES = 1024


@dataclass
class ProcessStats:
    """Counts of what happened to lines; `records == flowed + sum(skipped.values())`."""

    records: int = 0
    flowed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def add(self, other: ProcessStats) -> None:
        """Fold another set of counts into this one."""
        self.records += other.records
        self.flowed += other.flowed
        for reason, count in other.skipped.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + count

    @property
    def malformed(self) -> int:
        """Lines skipped because they were broken (as opposed to filtered or NODATA)."""
        return sum(n for r, n in self.skipped.items() if SkipReason(r).malformed)

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready view."""
        return {
            "records": self.records,
            "flowed": self.flowed,
            "skipped": {str(r): n for r, n in sorted(self.skipped.items())},
        }


class FlowProcessor:
    """Parse, normalise and aggregate flow-log lines of one format into a window of flows.

    Validation covers what the pipeline uses: the field count and the key fields. A damaged
    value in a field the pipeline never reads (`account-id`, `bytes`...) does not cost the
    flow; `records.parse_line` is the strict reference parser that checks every field.
    """

    def __init__(
        self,
        fmt: LogFormat,
        flow_filter: FlowFilter | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.format = fmt
        self.filter = flow_filter or FlowFilter()
        self.aggregator = Aggregator()
        self.stats = ProcessStats()
        self._n_fields = len(fmt.fields)
        key_at = [i for i, name in enumerate(fmt.fields) if name in KEY_FIELDS]
        self._key_names = tuple(fmt.fields[i] for i in key_at)
        self._key_fields = itemgetter(*key_at)
        # Prefix keys need the key fields first and at least one field after them.
        self._prefix_len = len(key_at) if key_at == list(range(len(key_at))) else 0
        if self._prefix_len >= self._n_fields:
            self._prefix_len = 0
        self._split_prefix = methodcaller("split", " ", self._prefix_len)
        self._rest = itemgetter(self._prefix_len)
        self._cache = _Resolved(self._resolve)
        self._cache_size = cache_size
        self._cache_bytes = cache_bytes
        self._cached_bytes = 0

    def feed(self, lines: Iterable[str]) -> None:
        """Process lines (with or without trailing newlines) into the current window."""
        iterator = iter(lines)
        while chunk := list(islice(iterator, CHUNK_LINES)):
            self._feed_chunk(chunk)

    def drain(self) -> list[tuple[Flow, int]]:
        """Close the window: its flows with record counts, in first-seen order."""
        return self.aggregator.drain()

    def _feed_chunk(self, chunk: list[str]) -> None:
        records = len(chunk)
        if max(map(len, chunk)) > MAX_RECORD_CHARS:
            chunk = self._without_too_long(chunk)
        keys = self._prefix_keys(chunk) if self._prefix_len else self._field_keys(chunk)
        cache = self._cache
        table = self.aggregator.table
        # The only per-line work, all of it C-level: each key looked up once (a key seen for
        # the first time is resolved by the cache's __missing__), its result counted straight
        # into the window's table. Skip reasons are counted there too and moved out below.
        _count_into(table, map(cache.__getitem__, keys))
        if cache.added:
            self._cached_bytes += sum(map(getsizeof, cache.added))  # each added once
            cache.added.clear()
            if len(cache) > self._cache_size or self._cached_bytes > self._cache_bytes:
                cache.clear()
                self._cached_bytes = 0
        skipped = self.stats.skipped
        for reason in _SKIP_REASONS:
            count = table.pop(reason, 0)  # type: ignore[call-overload]
            if count:
                skipped[reason] = skipped.get(reason, 0) + count
        self.stats.records += records
        self.stats.flowed = self.stats.records - sum(skipped.values())

    def _without_too_long(self, chunk: list[str]) -> list[str]:
        """The chunk without its over-long lines, which are counted as `too_long`."""
        kept = list(filterfalse(too_long, chunk))
        if len(kept) < len(chunk):
            skipped = self.stats.skipped
            skipped[SkipReason.TOO_LONG] = (
                skipped.get(SkipReason.TOO_LONG, 0) + len(chunk) - len(kept)
            )
        return kept

    def _clean_lines(self, chunk: list[str]) -> tuple[list[str], list[str]]:
        """Split a chunk into single-space separated lines of the right field count, and others."""
        clean = self._n_fields - 1

        def is_clean(line: str) -> bool:
            return line.count(" ") == clean and line.rstrip().count(" ") == clean

        return [line for line in chunk if is_clean(line)], [
            line for line in chunk if not is_clean(line)
        ]

    def _prefix_keys(self, chunk: list[str]) -> list[str]:
        """Keys as the text before the first non-key field."""
        lines, odd = self._clean_lines(chunk)
        rests = map(len, map(self._rest, map(self._split_prefix, lines)))
        ends = map(sub, map(len, lines), rests)
        keys = list(map(str.__getitem__, lines, map(slice, repeat(0), ends)))
        return keys + self._slow_keys(odd)

    def _field_keys(self, chunk: list[str]) -> list[str]:
        """Keys as tuples of the key fields' tokens."""
        lines, odd = self._clean_lines(chunk)
        # Split on the single spaces just counted (a tab inside a token must not shift the
        # fields), streamed so each token list is freed as soon as its key is taken.
        rows = map(_split_on_space, map(str.rstrip, lines))
        # Joined into one string: one hash per lookup instead of one per field of a tuple.
        keys = list(map(_join, map(self._key_fields, rows)))
        return keys + self._slow_keys(odd)

    def _slow_keys(self, lines: list[str]) -> list[str]:
        """Per-line path: canonical keys for usable lines; the others counted as skipped."""
        skipped = self.stats.skipped
        keys: list[str] = []
        for line in lines:
            tokens = line.split()
            if len(tokens) == self._n_fields:
                keys.append(self._canonical_key(tokens))
                continue
            reason = _odd_line(tokens)
            skipped[reason] = skipped.get(reason, 0) + 1
        return keys

    def _canonical_key(self, tokens: list[str]) -> str:
        if self._prefix_len:
            return " ".join(tokens[: self._prefix_len]) + " "
        return _join(self._key_fields(tokens))

    def _key_tokens(self, key: str) -> tuple[str, ...]:
        if self._prefix_len:
            return tuple(key.split(" ")[: self._prefix_len])
        return tuple(key.split(" "))

    def _resolve(self, key: str) -> Flow | SkipReason:
        tokens = self._key_tokens(key)
        if is_header(tokens):
            return SkipReason.HEADER
        parsed = parse_values(self._key_names, tokens)
        return parsed if isinstance(parsed, SkipReason) else normalise(parsed, self.filter)


_split_on_space = methodcaller("split", " ")
_join = " ".join
_SKIP_REASONS = tuple(SkipReason)
#: Counts an iterable's items into a dict in C (what `Counter.update` does).
_count_into = cast(Callable[[dict[Any, int], Iterable[Any]], None], Counter.update)


class _Resolved(dict[str, "Flow | SkipReason"]):
    """Keys resolved to their flow or skip reason; a missing key is resolved on lookup and
    noted in `added` (for the cache's byte count)."""

    __slots__ = ("added", "resolve")

    def __init__(self, resolve: Callable[[str], Flow | SkipReason]) -> None:
        super().__init__()
        self.resolve = resolve
        self.added: list[str] = []

    def __missing__(self, key: str) -> Flow | SkipReason:
        value = self[key] = self.resolve(key)
        self.added.append(key)
        return value


def _odd_line(tokens: list[str]) -> SkipReason:
    if not tokens:
        return SkipReason.EMPTY
    if is_header(tokens):
        return SkipReason.HEADER
    return SkipReason.FIELD_COUNT


def process_lines(
    lines: Iterable[str], fmt: LogFormat, flow_filter: FlowFilter | None = None
) -> tuple[list[tuple[Flow, int]], ProcessStats]:
    """One-shot helper: the aggregated flows (with record counts) and counts of `lines`."""
    processor = FlowProcessor(fmt, flow_filter)
    processor.feed(lines)
    return processor.drain(), processor.stats
