"""The hot path: flow-log lines in, aggregated flows and counts out.

Most lines in a real log repeat a small set of connections; only packets, bytes and times
change. So a line is reduced to the fields that decide its flow (addresses, ports, protocol,
action, status, TCP flags) and that key is resolved once, through the same parser and
normaliser as any other record, then cached. Repeats cost a split, a tuple and two dict
look-ups.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import itemgetter

from flowexport.core.aggregate import Aggregator, FlowCounts
from flowexport.core.flows import Flow
from flowexport.core.logformat import LogFormat
from flowexport.core.normalise import FlowFilter, normalise
from flowexport.core.reasons import SkipReason
from flowexport.core.records import COUNTER_MAX, is_header, parse_values

#: The fields whose values decide a record's flow (or its skip reason).
KEY_FIELDS: tuple[str, ...] = (
    "srcaddr",
    "dstaddr",
    "srcport",
    "dstport",
    "protocol",
    "action",
    "log-status",
    "tcp-flags",
    "pkt-srcaddr",
    "pkt-dstaddr",
)

#: Resolved keys kept before the cache is emptied; bounds memory on high-churn logs.
DEFAULT_CACHE_SIZE = 200_000


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

    Validation covers what the pipeline uses: the field count, the key fields above, and
    `packets`/`bytes` (summed per flow). A damaged value in a field the pipeline never reads
    (say `account-id`) does not cost the flow. `parse_line` is the strict reference parser.
    """

    def __init__(
        self,
        fmt: LogFormat,
        flow_filter: FlowFilter | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self.format = fmt
        self.filter = flow_filter or FlowFilter()
        self.aggregator = Aggregator()
        self.stats = ProcessStats()
        self._key_names = tuple(n for n in KEY_FIELDS if n in fmt)
        self._key = itemgetter(*(fmt.index[n] for n in self._key_names))
        self._cache: dict[tuple[str, ...], Flow | SkipReason] = {}
        self._cache_size = cache_size

    def feed(self, lines: Iterable[str]) -> None:
        """Process lines (with or without trailing newlines) into the current window."""
        n_fields = len(self.format.fields)
        key_of = self._key
        cache = self._cache
        cache_get = cache.get
        table = self.aggregator.table
        table_get = table.get
        skipped = self.stats.skipped
        packets_at = self.format.index.get("packets")
        bytes_at = self.format.index.get("bytes")
        records = 0
        for line in lines:
            records += 1
            tokens = line.split()
            if len(tokens) != n_fields:
                reason = self._odd_line(tokens)
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            key = key_of(tokens)
            result = cache_get(key)
            if result is None:
                result = self._resolve(key)
            if result.__class__ is SkipReason:
                skipped[result] = skipped.get(result, 0) + 1
                continue
            try:
                packets = int(tokens[packets_at]) if packets_at is not None else 0
                bytes_ = int(tokens[bytes_at]) if bytes_at is not None else 0
            except ValueError:
                packets, bytes_ = self._lenient_counters(tokens, packets_at, bytes_at)
            if not (0 <= packets <= COUNTER_MAX and 0 <= bytes_ <= COUNTER_MAX):
                skipped[SkipReason.BAD_INT] = skipped.get(SkipReason.BAD_INT, 0) + 1
                continue
            counts = table_get(result)  # type: ignore[arg-type]
            if counts is None:
                table[result] = FlowCounts(1, packets, bytes_)  # type: ignore[index]
            else:
                counts.records += 1
                counts.packets += packets
                counts.bytes += bytes_
        self.stats.records += records
        self.stats.flowed = self.stats.records - sum(skipped.values())

    def drain(self) -> list[tuple[Flow, FlowCounts]]:
        """Close the window: its flows with counts, in first-seen order."""
        return self.aggregator.drain()

    def _resolve(self, key: tuple[str, ...]) -> Flow | SkipReason:
        result: Flow | SkipReason
        if is_header(key):
            result = SkipReason.HEADER
        else:
            parsed = parse_values(self._key_names, key)
            result = parsed if isinstance(parsed, SkipReason) else normalise(parsed, self.filter)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[key] = result
        return result

    @staticmethod
    def _odd_line(tokens: list[str]) -> SkipReason:
        if not tokens:
            return SkipReason.EMPTY
        if is_header(tokens):
            return SkipReason.HEADER
        return SkipReason.FIELD_COUNT

    @staticmethod
    def _lenient_counters(
        tokens: list[str], packets_at: int | None, bytes_at: int | None
    ) -> tuple[int, int]:
        """Counters that are `-` count as 0; any other non-number marks the line bad (-1)."""
        values = []
        for at in (packets_at, bytes_at):
            text = "0" if at is None else tokens[at]
            if text == "-":
                values.append(0)
                continue
            try:
                values.append(int(text))
            except ValueError:
                values.append(-1)
        return values[0], values[1]


def process_lines(
    lines: Iterable[str], fmt: LogFormat, flow_filter: FlowFilter | None = None
) -> tuple[list[tuple[Flow, FlowCounts]], ProcessStats]:
    """One-shot helper: the aggregated flows and counts of `lines`."""
    processor = FlowProcessor(fmt, flow_filter)
    processor.feed(lines)
    return processor.drain(), processor.stats
