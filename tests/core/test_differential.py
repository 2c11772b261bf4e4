"""The columnar core against the per-line processor it replaced (tests/core/oracle.py) and a
per-line reference written from the rules in docs/how-it-works.md: the same flows (with their
record counts), the same skip reasons and counts, on generated lines and on every fixture.

The oracle's own order of flows differed from first-seen order when a chunk mixed clean and
other lines, so flows are compared to it as a mapping and to the reference as a list.
"""

from __future__ import annotations

import gzip
import io
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowexport.core.fields import KEY_FIELDS
from flowexport.core.flows import Flow
from flowexport.core.logformat import DEFAULT_V2_FORMAT, PIPELINE_FORMAT, LogFormat
from flowexport.core.normalise import FlowFilter, normalise
from flowexport.core.processor import FlowProcessor
from flowexport.core.reasons import SkipReason
from flowexport.core.records import is_header, parse_values, too_long
from flowexport.core.textfile import TextBlocks
from tests.core import oracle
from tests.core.test_golden import GOLDEN, input_format, parse_args, read_lines
from tests.core.test_properties import formats, tokens
from tests.flowlines import line as record

ROOT = Path(__file__).resolve().parents[2]


def reference(
    lines: list[str], fmt: LogFormat, flow_filter: FlowFilter
) -> tuple[list[tuple[Flow, int]], Counter[str]]:
    """Each line alone, by the documented rules; flows in first-seen order."""
    n = len(fmt.fields)
    key_at = [i for i, name in enumerate(fmt.fields) if name in KEY_FIELDS]
    names = [fmt.fields[i] for i in key_at]
    flows: dict[Flow, int] = {}
    skipped: Counter[str] = Counter()
    for line in lines:
        outcome: Flow | SkipReason
        stripped = line.rstrip()
        if too_long(line):
            outcome = SkipReason.TOO_LONG
        else:
            clean = line.count(" ") == n - 1 and stripped.count(" ") == n - 1
            fields = stripped.split(" ") if clean else line.split()
            if len(fields) != n:
                if not fields:
                    outcome = SkipReason.EMPTY
                elif is_header(fields):
                    outcome = SkipReason.HEADER
                else:
                    outcome = SkipReason.FIELD_COUNT
            else:
                key = [fields[i] for i in key_at]
                if is_header(key):
                    outcome = SkipReason.HEADER
                else:
                    parsed = parse_values(names, key)
                    outcome = (
                        parsed if isinstance(parsed, SkipReason) else normalise(parsed, flow_filter)
                    )
        if isinstance(outcome, SkipReason):
            skipped[str(outcome)] += 1
        else:
            flows[outcome] = flows.get(outcome, 0) + 1
    return list(flows.items()), skipped


def check(lines: list[str], fmt: LogFormat, flow_filter: FlowFilter) -> None:
    """New keys resolved on columns and one by one (the processor picks by their number)
    give what the old processor and the reference give."""
    old = oracle.FlowProcessor(fmt, flow_filter)
    old.feed(lines)
    old_flows = old.drain()
    old_skipped = {str(r): c for r, c in old.stats.skipped.items() if c}
    flows, skipped = reference(lines, fmt, flow_filter)
    for on_columns in (0, 10**9):
        new = FlowProcessor(fmt, flow_filter)
        new._resolve_on_columns = on_columns
        new.feed(lines)
        new_flows = new.drain()
        assert dict(new_flows) == dict(old_flows)
        assert (new.stats.records, new.stats.flowed) == (old.stats.records, old.stats.flowed)
        assert {str(r): c for r, c in new.stats.skipped.items() if c} == old_skipped
        assert new_flows == flows
        assert old_skipped == dict(skipped)


#: Ways a line gets damaged: other whitespace, doubled or trailing spaces, cut fields.
damage = st.sampled_from(
    [
        lambda t: t,
        lambda t: t,
        lambda t: t + " ",
        lambda t: " " + t,
        lambda t: t.replace(" ", "\t", 1),
        lambda t: t.replace(" ", "  ", 1),
        lambda t: t.replace(" ", "\u00a0", 1),
        lambda t: t.rsplit(" ", 1)[0],
        lambda t: t.rsplit(" ", 1)[0] + " ",
        lambda t: t + "\r\n",
        lambda t: t + "\n",
        lambda t: t.replace(" ", "\n", 1),
        lambda t: "",
        lambda t: "   ",
    ]
)

filters = st.sampled_from(
    [
        FlowFilter.build(["ACCEPT"]),
        FlowFilter.build(["ACCEPT", "REJECT"]),
        FlowFilter.build(["REJECT"], include=["10.0.0.0/8", "2001:db8::/32"]),
        FlowFilter.build(["ACCEPT"], exclude=["10.0.0.0/9"]),
    ]
)


@given(formats, filters, st.data())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_generated_lines_give_what_the_old_processor_gave(
    fmt: LogFormat, flow_filter: FlowFilter, data: st.DataObject
) -> None:
    n = len(fmt.fields)
    rows = data.draw(st.lists(st.lists(tokens, min_size=n, max_size=n), max_size=40))
    lines = [data.draw(damage)(" ".join(row)) for row in rows]
    # Repeats, as real logs have: the same records again, in another order.
    lines += data.draw(st.permutations(lines))
    check(lines, fmt, flow_filter)


@given(st.lists(st.text(max_size=200), max_size=30), formats)
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_arbitrary_text_gives_what_the_old_processor_gave(lines: list[str], fmt: LogFormat) -> None:
    check(lines, fmt, FlowFilter.build(["ACCEPT", "REJECT"]))


def test_every_fixture_gives_what_the_old_processor_gave() -> None:
    from flowexport.cli import build_parser  # noqa: PLC0415

    cases = sorted(p for p in GOLDEN.iterdir() if p.is_dir())
    assert cases
    for case in cases:
        options = build_parser("parse").parse_args(["parse", *parse_args(case)])
        lines = read_lines(case / "input.log")
        fmt = input_format(options.log_format, lines)
        flow_filter = FlowFilter.build(options.actions, options.include_cidr, options.exclude_cidr)
        check(lines, fmt, flow_filter)
    sample = read_lines(ROOT / "examples" / "flowlogs" / "sample.log")
    for fmt in (input_format(None, sample), DEFAULT_V2_FORMAT, PIPELINE_FORMAT):
        check(sample, fmt, FlowFilter.build(["ACCEPT", "REJECT"]))


@given(
    st.lists(st.one_of(tokens, st.just("\r"), st.just("é"), st.just("\xff")), max_size=400),
    st.sampled_from([DEFAULT_V2_FORMAT, PIPELINE_FORMAT]),
    st.integers(1, 300),
    st.booleans(),
    st.data(),
)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_files_read_in_blocks_give_what_the_old_reader_gave(
    pieces: list[str], fmt: LogFormat, block_bytes: int, gzipped: bool, data: st.DataObject
) -> None:
    """Bytes of a file, cut into blocks anywhere (inside a line, between \\r and \\n, inside a
    UTF-8 character), give what the old reader's lines (Python's text mode) gave."""
    seps = st.sampled_from([" ", " ", " ", "  ", "\t", "\n", "\r\n", "\r"])
    text = "".join(piece + data.draw(seps) for piece in pieces)
    good = [record(fmt, srcport=40000 + i % 7) for i in range(data.draw(st.integers(0, 30)))]
    text = "\n".join(good) + "\n" + text if data.draw(st.booleans()) else text + "\n".join(good)
    raw = text.encode("utf-8", "surrogatepass").replace("\xff".encode(), b"\xff")
    if gzipped:
        raw = gzip.compress(raw)
    old = oracle.FlowProcessor(fmt)
    with io.TextIOWrapper(
        io.BytesIO(gzip.decompress(raw) if gzipped else raw),
        encoding="utf-8",
        errors="replace",
        newline=None,
    ) as stream:
        old.feed(stream)
    new = FlowProcessor(fmt)
    new._resolve_on_columns = data.draw(st.sampled_from([0, 10**9]))
    blocks = TextBlocks(io.BytesIO(raw), gzipped=gzipped, block_bytes=block_bytes)
    for block in blocks:
        new.feed_text(block)
    assert blocks.error is None
    assert dict(new.drain()) == dict(old.drain())
    assert (new.stats.records, new.stats.skipped) == (old.stats.records, old.stats.skipped)
