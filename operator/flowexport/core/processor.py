"""The hot path: flow-log records in, aggregated flows and counts out, over columns.

Most records repeat a small set of connections; only packets, bytes and times change. So a
record is reduced to its *key*, the text of the fields that decide its flow or skip reason
(addresses, ports, protocol, action, status, TCP flags), and the work per record is done on
columns (`core.columnar`: numpy over a block's bytes, Arrow's hash kernels): the keys are cut
out of the lines, coded densely, looked up among the keys resolved before, and counted. Python
work is per distinct key seen for the first time (resolved through the same parser and
normaliser as any other record: `records.parse_values`, `normalise.normalise`) and per distinct
flow of a block; there is no per-record Python loop on well-formed input.

Input comes as text lines (`feed`: CloudWatch messages or lines; `feed_text`: a block of bytes
read from a file) or as Arrow record batches of typed columns (`feed_batch`: Parquet flow
logs, see `core.parquet`). Both end in the same keys, so the same record gives the same flow
or skip reason whichever way it came.

How a text line is split (the reference semantics, `line_key` below; the columnar path takes
the common case and gives the same answer):
- a line over MAX_RECORD_CHARS characters (its line break not counted) is `too_long`;
- a line with exactly the format's field count of single spaces that still has them once
  trailing whitespace is stripped is split on those spaces (a tab or a no-break space inside
  a field stays in it, and never shifts the fields);
- any other line is split on runs of whitespace: the format's field count gives a record,
  no field an `empty` line, field names a `header`, anything else `field_count`.

Memory follows neither line length nor the number of distinct lines: a record longer than
MAX_RECORD_CHARS is counted `too_long` and no key of it is taken, input is handled in bounded
blocks, and the resolved keys are forgotten when they are too many or take too many bytes.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import filterfalse, islice
from typing import TYPE_CHECKING, Any

from flowexport.core.aggregate import Aggregator
from flowexport.core.fields import KEY_FIELDS
from flowexport.core.flows import Flow
from flowexport.core.logformat import LogFormat
from flowexport.core.normalise import FlowFilter, normalise
from flowexport.core.reasons import SkipReason
from flowexport.core.records import MAX_RECORD_CHARS, is_header, parse_values, too_long

if TYPE_CHECKING:
    import pyarrow as pa

#: Resolved keys kept before they are forgotten (one block's more may be held a moment);
#: bounds memory on high-churn logs.
DEFAULT_CACHE_SIZE = 200_000

#: Bytes of resolved keys kept before they are forgotten (one block's more may be held a
#: moment): the bound when keys are long. A real key takes about 100 bytes.
DEFAULT_CACHE_BYTES = 32 * 2**20

#: Lines of `feed` handled at a time (at most this many lines of MAX_RECORD_CHARS each are
#: held as one block of bytes, besides the caller's strings).
CHUNK_LINES = 4096

#: New keys of a block resolved on columns from this many on; fewer are resolved one by one
#: through `records.parse_values` and `normalise.normalise` (same answers: the differential
#: tests run both ways), as the fixed cost of the column kernels is about that of 250 keys.
RESOLVE_ON_COLUMNS = 256

#: Blocks of `feed_texts` whose distinct keys are looked up together.
GROUP_BLOCKS = 4

#: Characters of per-line texts a group may hold before it is counted (hostile input sends
#: whole blocks down the per-line path).
_GROUP_TEXT_CHARS = 4 * 2**20

#: Bytes counted per resolved key beside its text (what a Python string of it would add).
_KEY_OVERHEAD = 64

#: The longest key of the per-line path kept (four longest addresses and the rest): a longer
#: one cannot be valid, and costs its line a parse each time it comes.
_SLOW_KEY_CHARS = 512

_REASONS = tuple(SkipReason)
_REASON_CODE = {reason: -1 - i for i, reason in enumerate(_REASONS)}
_MISSING = -(2**40)


@dataclass
class ProcessStats:
    """Counts of what happened to records; `records == flowed + sum(skipped.values())`."""

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
        """Records skipped because they were broken (as opposed to filtered or NODATA)."""
        return sum(n for r, n in self.skipped.items() if SkipReason(r).malformed)

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready view."""
        return {
            "records": self.records,
            "flowed": self.flowed,
            "skipped": {str(r): n for r, n in sorted(self.skipped.items())},
        }


def line_key(line: str, n_fields: int, key_at: Sequence[int]) -> tuple[str, ...] | SkipReason:
    """The key fields' texts of one line, or why the line has none (the reference split)."""
    if too_long(line):
        return SkipReason.TOO_LONG
    if line.count(" ") == n_fields - 1:
        stripped = line.rstrip()
        if stripped.count(" ") == n_fields - 1:
            tokens = stripped.split(" ")
            return tuple(tokens[i] for i in key_at)
    tokens = line.split()
    if len(tokens) == n_fields:
        return tuple(tokens[i] for i in key_at)
    if not tokens:
        return SkipReason.EMPTY
    if is_header(tokens):
        return SkipReason.HEADER
    return SkipReason.FIELD_COUNT


def key_runs(key_at: Sequence[int]) -> list[tuple[int, int]]:
    """Adjacent key field positions as runs `[a, b)`: each run is one slice of a line."""
    runs: list[tuple[int, int]] = []
    for i in key_at:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


class FlowProcessor:
    """Parse, normalise and aggregate flow-log records of one format into a window of flows.

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
        from flowexport.core import columnar  # noqa: PLC0415 - numpy/pyarrow only when reading

        self._columnar = columnar
        self._np: Any = importlib.import_module("numpy")
        self._pa: Any = importlib.import_module("pyarrow")
        self.format = fmt
        self.filter = flow_filter or FlowFilter()
        self._aggregator = Aggregator()
        self.stats = ProcessStats()
        self._n_fields = len(fmt.fields)
        self._key_at = tuple(i for i, name in enumerate(fmt.fields) if name in KEY_FIELDS)
        self._key_names = tuple(fmt.fields[i] for i in self._key_at)
        self._runs = key_runs(self._key_at)
        self._widest = [
            sum(columnar.widest_value(fmt.fields[i]) + 1 for i in range(a, b)) - 1
            for a, b in self._runs
        ]
        # The key fields lead the format (the operator's own format is built so): one run.
        prefix = len(self._key_at) if self._key_at == tuple(range(len(self._key_at))) else 0
        self._prefix_len = prefix if prefix < self._n_fields else 0
        self._table = columnar.KeyTable()
        self._slow: dict[tuple[str, ...], int] = {}
        self._slow_bytes = 0
        self._flow_ids: dict[Flow, int] = {}
        self._flows: list[Flow] = []
        # Records per flow id not yet in the aggregator, and those flow ids in first-seen
        # order: blocks add to them on columns, the aggregator takes them when asked.
        self._counts = self._np.zeros(0, self._np.int64)
        self._order: list[int] = []
        self._cache_size = cache_size
        self._cache_bytes = cache_bytes
        self._resolve_on_columns = RESOLVE_ON_COLUMNS

    # -- input ------------------------------------------------------------------------------

    def feed(self, lines: Iterable[str]) -> None:
        """Process lines (with or without trailing line breaks) into the current window."""
        iterator = iter(lines)
        while chunk := list(islice(iterator, CHUNK_LINES)):
            if max(map(len, chunk)) > MAX_RECORD_CHARS:
                chunk = self._without_too_long(chunk)
            if chunk:
                self._feed_strings(chunk)

    def feed_text(self, data: bytes | memoryview) -> None:
        """Process a block of lines as read from a file: `\\n` line breaks (universal
        newlines already applied), the last line's break optional, any bytes (what is not
        UTF-8 reads as U+FFFD).

        A memoryview over the start of a larger buffer (as `textfile.TextBlocks` gives) is
        read in place when the buffer holds `columnar.PADDING` bytes more than the view."""
        self._finish(self._prepare_text(data))

    def feed_texts(self, blocks: Iterable[bytes | memoryview]) -> None:
        """`feed_text` each block; the distinct keys of up to GROUP_BLOCKS blocks are looked
        up together (most keys recur from block to block: one lookup instead of several)."""
        group: list[_Prepared] = []
        held = 0
        for block in blocks:
            prepared = self._prepare_text(block)
            group.append(prepared)
            held += sum(map(len, prepared.slow_texts))
            if len(group) == GROUP_BLOCKS or held > _GROUP_TEXT_CHARS:
                self._finish_group(group)
                group, held = [], 0
        if group:
            self._finish_group(group)

    def _finish_group(self, group: list[_Prepared]) -> None:
        keyed = [prepared for prepared in group if prepared.keys is not None]
        if len(keyed) > 1:
            keys, codes = self._columnar.encode(
                self._pa.concat_arrays([prepared.keys for prepared in keyed])
            )
            results = self._results(keys)
            at = 0
            for prepared in keyed:
                count = len(prepared.keys)
                prepared.results = results[codes[at : at + count]]
                at += count
        for prepared in group:  # the cache is not emptied mid-group: the results hold ids
            self._finish(prepared, forget=False)
        self._forget_if_full()

    def _prepare_text(self, data: bytes | memoryview) -> _Prepared:
        if not len(data):
            return _Prepared(0, 0)
        buffer = data.obj if isinstance(data, memoryview) else data
        if not isinstance(buffer, bytes | bytearray):
            buffer = bytes(data)
        ascii_only = buffer.isascii()
        if not ascii_only:
            text = bytes(data).decode("utf-8", "replace").encode()
            ascii_only, buffer, data = False, text, text
        if len(buffer) < len(data) + self._columnar.PADDING:
            buffer = bytes(data) + bytes(self._columnar.PADDING)
        return self._prepare_block(data, buffer, ascii_only, {})

    def feed_batch(self, batch: pa.RecordBatch) -> None:
        """Process a record batch with one column per key field of the format, named as the
        field (as `core.parquet` gives them), of any type: integers, strings, nulls for `-`."""
        columnar = self._columnar
        rows = batch.num_rows
        if not rows:
            return
        parts = []
        for name in self._key_names:
            dictionary, codes = columnar.encode(batch.column(name))
            parts.append((columnar.column_text(dictionary), codes))
        codes, first = columnar.combine(parts)
        keys = columnar.distinct_keys(parts, first)
        results = self._results(keys)
        counts = self._np.bincount(codes, minlength=len(keys))
        self._tally(rows, results, counts, 0)
        self._forget_if_full()

    def drain(self) -> list[tuple[Flow, int]]:
        """Close the window: its flows with record counts, in first-seen order."""
        return self.aggregator.drain()

    @property
    def aggregator(self) -> Aggregator:
        """The window's flows so far."""
        if self._order:
            table, flows, counts = self._aggregator.table, self._flows, self._counts
            for flow_id in self._order:
                flow = flows[flow_id]
                table[flow] = table.get(flow, 0) + int(counts[flow_id])
            counts[:] = 0
            self._order = []
        return self._aggregator

    # -- text -------------------------------------------------------------------------------

    def _without_too_long(self, chunk: list[str]) -> list[str]:
        """The chunk without its over-long lines, which are counted as `too_long`."""
        kept = list(filterfalse(too_long, chunk))
        dropped = len(chunk) - len(kept)
        if dropped:
            skipped = self.stats.skipped
            skipped[SkipReason.TOO_LONG] = skipped.get(SkipReason.TOO_LONG, 0) + dropped
            self.stats.records += dropped
            self.stats.flowed = self.stats.records - sum(skipped.values())
        return kept

    def _feed_strings(self, chunk: list[str]) -> None:
        text = "\n".join(chunk)
        forced: dict[int, str] = {}
        if text.count("\n") != len(chunk) - 1 or "\r" in text:
            # A trailing line break does not change a line's outcome; a line break inside a
            # line (one CloudWatch message) would split it, so such a line goes per line.
            lines = list(map(str.rstrip, chunk, ["\r\n"] * len(chunk)))
            for i, line in enumerate(lines):
                if "\n" in line or "\r" in line:
                    forced[i], lines[i] = chunk[i], ""
            text = "\n".join(lines)
        try:
            data = (text + "\n").encode()
        except UnicodeEncodeError:  # lone surrogates: those lines go per line
            lines = text.split("\n")
            for i, line in enumerate(lines):
                try:
                    line.encode()
                except UnicodeEncodeError:
                    forced[i], lines[i] = chunk[i], ""
            data = ("\n".join(lines) + "\n").encode()
        padded = data + bytes(self._columnar.PADDING)
        self._finish(self._prepare_block(data, padded, data.isascii(), forced))

    def _prepare_block(
        self,
        data: bytes | memoryview,
        buffer: bytes | bytearray,
        ascii_only: bool,
        forced: dict[int, str],
    ) -> _Prepared:
        """Cut the lines of `data` (which starts `buffer`, PADDING bytes longer) into distinct
        keys, and take the texts of the lines for the per-line path."""
        columnar, np = self._columnar, self._np
        lines = columnar.split_block(data, self._n_fields, ascii_only, list(forced))
        prepared = _Prepared(lines.count, lines.too_long)
        if len(lines.clean):
            bounds = columnar.run_bounds(lines, self._n_fields, self._runs)
            over = columnar.over_long(bounds, self._widest)
            if over.any():  # malformed in a key field: per line, no long key is made
                lines.slow = np.union1d(lines.slow, lines.clean[over])
                lines.clean = lines.clean[~over]
                bounds = [(start[~over], end[~over]) for start, end in bounds]
        if len(lines.clean):
            parts = [columnar.encode(view) for view in columnar.views(buffer, bounds)]
            codes, first = columnar.combine(parts)
            prepared.keys = columnar.distinct_keys(parts, first)
            prepared.counts = np.bincount(codes, minlength=len(prepared.keys))
            prepared.positions = lines.clean[first]
        if len(lines.slow):
            starts, ends = lines.starts, lines.ends
            prepared.slow = lines.slow
            prepared.slow_texts = [
                forced[i] if i in forced else str(data[starts[i] : ends[i]], "utf-8")
                for i in lines.slow.tolist()
            ]
        return prepared

    def _finish(self, prepared: _Prepared, forget: bool = True) -> None:
        """Resolve and count a prepared block."""
        np = self._np
        results = counts = np.zeros(0, np.int64)
        positions = prepared.positions
        if prepared.keys is not None:
            results = prepared.results
            if results is None:
                results = self._results(prepared.keys)
            counts = prepared.counts
        if prepared.slow is not None:
            texts = prepared.slow_texts
            slow_results = np.fromiter(map(self._line_code, texts), np.int64, len(texts))
            ones = np.ones(len(texts), np.int64)
            if positions is None:
                results, counts = slow_results, ones
            else:  # interleave by line number: flows stay in first-seen order
                order = np.argsort(np.concatenate([positions, prepared.slow]), kind="stable")
                results = np.concatenate([results, slow_results])[order]
                counts = np.concatenate([counts, ones])[order]
        self._tally(prepared.records, results, counts, prepared.too_long)
        if forget:
            self._forget_if_full()

    # -- resolution -------------------------------------------------------------------------

    def _results(self, keys: pa.Array) -> Any:
        """Each distinct key's result code: a flow id, or a negative skip code."""
        np = self._np
        results = self._table.lookup(keys, _MISSING)
        new = np.flatnonzero(results == _MISSING)
        if len(new):
            new_keys = keys.take(self._pa.array(new))
            codes = self._resolve_keys(new_keys)
            results[new] = codes
            self._table.add(new_keys, codes, _KEY_OVERHEAD)
        return results

    def _resolve_keys(self, keys: pa.Array) -> Any:
        """Result codes of keys not seen before, resolved on columns."""
        columnar, np = self._columnar, self._np
        fields = None
        if len(keys) >= self._resolve_on_columns:
            fields = columnar.key_fields(keys, len(self._key_names))
        if fields is None:  # a few keys: one by one costs less than thirty kernel calls
            texts = [key.decode("utf-8", "replace") for key in keys.to_pylist()]
            outcomes = (self._resolve(text.split(" ")) for text in texts)
            return np.fromiter(map(self._code, outcomes), np.int64, len(texts))
        resolved = columnar.resolve(self._key_names, fields, self.filter)
        codes = -1 - resolved.reason
        is_flow = np.flatnonzero(resolved.reason == columnar.FLOW)
        if len(is_flow):
            rows = np.stack(
                [
                    resolved.client[is_flow],
                    resolved.server[is_flow],
                    resolved.port[is_flow],
                    resolved.protocol[is_flow],
                ],
                axis=1,
            )
            distinct, which = np.unique(rows, axis=0, return_inverse=True)
            addresses = resolved.addresses
            ids = np.array(
                [
                    self._code(Flow(addresses[c], addresses[s], p, q))
                    for c, s, p, q in distinct.tolist()
                ],
                np.int64,
            )
            codes[is_flow] = ids[which.reshape(-1)]
        return codes

    def _line_code(self, line: str) -> int:
        """The result code of one line taken by the per-line path."""
        key = line_key(line, self._n_fields, self._key_at)
        if isinstance(key, SkipReason):
            return _REASON_CODE[key]
        code = self._slow.get(key)
        if code is None:
            code = self._code(self._resolve(key))
            size = sum(map(len, key))
            if size <= _SLOW_KEY_CHARS:  # a longer key is malformed: not worth its memory
                self._slow[key] = code
                self._slow_bytes += size + _KEY_OVERHEAD
        return code

    def _resolve(self, tokens: Sequence[str]) -> Flow | SkipReason:
        if len(tokens) != len(self._key_names):
            return SkipReason.FIELD_COUNT
        if is_header(tokens):
            return SkipReason.HEADER
        parsed = parse_values(self._key_names, tokens)
        return parsed if isinstance(parsed, SkipReason) else normalise(parsed, self.filter)

    def _code(self, outcome: Flow | SkipReason) -> int:
        if isinstance(outcome, SkipReason):
            return _REASON_CODE[outcome]
        code = self._flow_ids.get(outcome)
        if code is None:
            code = self._flow_ids[outcome] = len(self._flows)
            self._flows.append(outcome)
        return code

    # -- counting ---------------------------------------------------------------------------

    def _tally(self, records: int, results: Any, counts: Any, too_long: int) -> None:
        """Count a block: `results` and `counts` per distinct key (or line), in first-seen
        order."""
        np = self._np
        skipped = self.stats.skipped
        if too_long:
            skipped[SkipReason.TOO_LONG] = skipped.get(SkipReason.TOO_LONG, 0) + too_long
        if len(results):
            is_skip = results < 0
            if is_skip.any():
                per_reason = np.bincount(
                    -1 - results[is_skip], weights=counts[is_skip], minlength=len(_REASONS)
                )
                for i in np.flatnonzero(per_reason).tolist():
                    reason = _REASONS[i]
                    skipped[reason] = skipped.get(reason, 0) + int(per_reason[i])
            flow_ids = results[~is_skip]
            if len(flow_ids):
                # Each flow once, in order of its first key (keys are in first-seen order).
                first = np.full(len(self._flows), len(flow_ids), np.int64)
                np.minimum.at(first, flow_ids, np.arange(len(flow_ids)))
                ids = np.flatnonzero(first < len(flow_ids))
                ids = ids[np.argsort(first[ids], kind="stable")]
                sums = np.bincount(flow_ids, weights=counts[~is_skip])[ids].astype(np.int64)
                if len(self._counts) < len(self._flows):
                    grown = np.zeros(max(len(self._flows), 2 * len(self._counts)), np.int64)
                    grown[: len(self._counts)] = self._counts
                    self._counts = grown
                self._order.extend(ids[self._counts[ids] == 0].tolist())
                self._counts[ids] += sums
        self.stats.records += records
        self.stats.flowed = self.stats.records - sum(skipped.values())

    def _forget_if_full(self) -> None:
        """Forget the resolved keys when they are too many or take too many bytes."""
        held = self._table.count + len(self._slow)
        if held > self._cache_size or self._table.nbytes + self._slow_bytes > self._cache_bytes:
            self._forget()

    def _forget(self) -> None:
        self.aggregator  # noqa: B018 - takes the counts by flow id before the ids go
        self._table.clear()
        self._slow.clear()
        self._slow_bytes = 0
        self._flow_ids.clear()
        self._flows.clear()
        self._counts = self._np.zeros(0, self._np.int64)

    @property
    def _cache(self) -> list[str]:
        """The keys held, as text (for tests)."""
        held = [key.decode("utf-8", "replace") for key in self._table.held()]
        return held + [" ".join(key) for key in self._slow]


@dataclass
class _Prepared:
    """A block cut into keys, waiting to be resolved and counted."""

    records: int
    too_long: int
    keys: Any = None  # the distinct keys of the clean lines, in first-seen order
    counts: Any = None  # lines per key
    positions: Any = None  # the line where each key first appears
    results: Any = None  # each key's result code, when looked up with its group
    slow: Any = None  # the lines for the per-line path
    slow_texts: list[str] = field(default_factory=list)


def process_lines(
    lines: Iterable[str], fmt: LogFormat, flow_filter: FlowFilter | None = None
) -> tuple[list[tuple[Flow, int]], ProcessStats]:
    """One-shot helper: the aggregated flows (with record counts) and counts of `lines`."""
    processor = FlowProcessor(fmt, flow_filter)
    processor.feed(lines)
    return processor.drain(), processor.stats
