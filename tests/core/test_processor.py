import sys

from flowexport.core.fields import KEY_FIELDS
from flowexport.core.flows import Flow
from flowexport.core.logformat import DEFAULT_V2_FORMAT, PIPELINE_FORMAT, LogFormat
from flowexport.core.normalise import FlowFilter
from flowexport.core.processor import CHUNK_LINES, FlowProcessor, process_lines
from flowexport.core.reasons import SkipReason
from flowexport.core.records import MAX_RECORD_CHARS
from tests.flowlines import line

PG = Flow("10.0.1.15", "10.0.2.40", 5432, 6)
REQUEST = dict(srcaddr="10.0.1.15", dstaddr="10.0.2.40", srcport=48512, dstport=5432)
RESPONSE = dict(srcaddr="10.0.2.40", dstaddr="10.0.1.15", srcport=5432, dstport=48512)


def test_both_legs_on_both_enis_make_one_flow_with_summed_counts() -> None:
    for fmt in (PIPELINE_FORMAT, DEFAULT_V2_FORMAT):
        lines = [
            line(fmt, interface_id="eni-a", packets=3, **REQUEST),
            line(fmt, interface_id="eni-a", packets=2, **RESPONSE),
            line(fmt, interface_id="eni-b", packets=3, **REQUEST),
            line(fmt, interface_id="eni-b", packets=2, **RESPONSE),
        ]
        flows, stats = process_lines(lines, fmt)
        assert flows == [(PG, 4)]
        assert (stats.records, stats.flowed, stats.skipped) == (4, 4, {})


def test_key_strategy_follows_the_format() -> None:
    assert FlowProcessor(PIPELINE_FORMAT)._prefix_len == len(KEY_FIELDS)
    assert FlowProcessor(DEFAULT_V2_FORMAT)._prefix_len == 0
    # Key fields only: no field after them to end the prefix, so tuple keys.
    only_keys = LogFormat.parse("${srcaddr} ${dstaddr} ${srcport} ${dstport} ${protocol}")
    assert FlowProcessor(only_keys)._prefix_len == 0


NO_FLOW = dict(srcaddr="-", dstaddr="-", srcport="-", dstport="-", protocol="-", action="-")


def skip_mix(fmt: LogFormat) -> list[str]:
    return [
        "",
        " ".join(fmt.fields),
        line(fmt, **NO_FLOW, log_status="NODATA"),
        line(fmt, **NO_FLOW, log_status="SKIPDATA"),
        "short line",
        line(fmt) + " extra",
        line(fmt, srcaddr="300.1.1.1"),
        line(fmt, dstport="http"),
        line(fmt, action="REJECT"),
        line(fmt, action="SOMETIMES"),
        line(fmt, bytes="lots"),  # a field the pipeline does not read: the flow is kept
        line(fmt).replace(" ", "\t"),  # other whitespace: the slow path, same flow
        "  " + line(fmt).replace(" ", "   ") + "  \r\n",
        "\x00\xff garbage \u2603",
    ]


def test_skips_are_counted_by_reason_in_every_key_strategy() -> None:
    for fmt in (PIPELINE_FORMAT, DEFAULT_V2_FORMAT):
        lines = skip_mix(fmt)
        processor = FlowProcessor(fmt)
        processor.feed(lines)
        stats = processor.stats
        assert stats.records == len(lines)
        assert stats.skipped == {
            SkipReason.EMPTY: 1,
            SkipReason.HEADER: 1,
            SkipReason.NODATA: 1,
            SkipReason.SKIPDATA: 1,
            SkipReason.FIELD_COUNT: 3,
            SkipReason.BAD_IP: 1,
            SkipReason.BAD_INT: 1,
            SkipReason.ACTION_FILTERED: 1,
            SkipReason.BAD_VALUE: 1,
        }, fmt
        assert stats.flowed == 3
        assert stats.malformed == 6
        assert processor.drain() == [(PG, 3)]


def test_prefix_and_field_keys_agree_with_each_other() -> None:
    lines = skip_mix(PIPELINE_FORMAT) + [line(PIPELINE_FORMAT, **RESPONSE, tcp_flags=18)] * 3
    prefix = FlowProcessor(PIPELINE_FORMAT)
    fields = FlowProcessor(PIPELINE_FORMAT)
    fields._prefix_len = 0  # force the tuple-key strategy on the same format
    for processor in (prefix, fields):
        processor.feed(lines)
    assert prefix.drain() == fields.drain() == [(PG, 6)]
    assert prefix.stats == fields.stats


def test_custom_format_field_order() -> None:
    fmt = LogFormat.parse("${protocol} ${dstport} ${dstaddr} ${srcport} ${srcaddr} ${action}")
    flows, _ = process_lines(["17 53 10.0.0.2 40000 10.0.1.15 ACCEPT"], fmt)
    assert flows == [(Flow("10.0.1.15", "10.0.0.2", 53, 17), 1)]


def test_cache_is_bounded_and_results_stay_right() -> None:
    processor = FlowProcessor(PIPELINE_FORMAT, FlowFilter(), cache_size=10)
    lines = [line(PIPELINE_FORMAT, srcport=40000 + i) for i in range(100)] * 2
    for start in range(0, len(lines), 20):  # one chunk per call: 20 new keys each time
        processor.feed(lines[start : start + 20])
        assert len(processor._cache) <= 10 + 20  # the bound, plus at most one chunk's keys
    assert processor.drain() == [(PG, 200)]


def test_many_chunks_and_windows() -> None:
    processor = FlowProcessor(PIPELINE_FORMAT)
    processor.feed(line(PIPELINE_FORMAT) for _ in range(CHUNK_LINES * 2 + 5))
    first = processor.drain()
    processor.feed([line(PIPELINE_FORMAT), line(PIPELINE_FORMAT, **RESPONSE)])
    assert first == [(PG, CHUNK_LINES * 2 + 5)]
    assert processor.drain() == [(PG, 2)]
    assert processor.stats.records == CHUNK_LINES * 2 + 7


def test_whitespace_inside_a_token_never_shifts_fields() -> None:
    for fmt in (PIPELINE_FORMAT, DEFAULT_V2_FORMAT):
        # A tab inside an unused field: the line keeps its flow in both key strategies.
        damaged = line(fmt, account_id="1234\t5678", **RESPONSE)
        # A tab inside a key field: malformed, never a flow built from shifted fields.
        shifted = line(
            fmt,
            srcaddr="10.0.2.40\t10.0.9.9",
            **{k: v for k, v in RESPONSE.items() if k != "srcaddr"},
        )
        processor = FlowProcessor(fmt)
        processor.feed([damaged, shifted, damaged + "\n"])
        assert processor.drain() == [(PG, 2)], fmt
        assert processor.stats.malformed == 1


def test_over_long_records_are_counted_never_parsed_or_cached() -> None:
    for fmt in (PIPELINE_FORMAT, DEFAULT_V2_FORMAT):
        # A 256 KB CloudWatch event whose key fields are long: no key of it is ever taken.
        event = line(fmt, srcaddr="10." + "0" * 256 * 1024 + ".0.1")
        just_over = line(fmt, account_id="1" * MAX_RECORD_CHARS)
        lines = [line(fmt), event, just_over, line(fmt, **RESPONSE), event + "\n"]
        processor = FlowProcessor(fmt)
        processor.feed(lines)
        assert processor.drain() == [(PG, 2)], fmt
        assert processor.stats.skipped == {SkipReason.TOO_LONG: 3}
        assert processor.stats.records == 5
        assert processor.stats.malformed == 3
        assert max(map(len, map(str, processor._cache))) < 200


def test_a_chunk_of_only_over_long_records() -> None:
    processor = FlowProcessor(PIPELINE_FORMAT)
    processor.feed(["x" * (MAX_RECORD_CHARS + 1)] * 3)
    assert processor.stats.skipped == {SkipReason.TOO_LONG: 3}
    assert (processor.stats.records, processor.stats.flowed) == (3, 0)


def test_cache_is_bounded_in_bytes() -> None:
    budget = 1_000_000
    for fmt in (PIPELINE_FORMAT, DEFAULT_V2_FORMAT):
        processor = FlowProcessor(fmt, cache_bytes=budget)
        # Distinct records just under the limit, their length in a key field: each key is ~8 KB.
        pad = "9" * (MAX_RECORD_CHARS - 200)
        lines = [line(fmt, srcport=f"{i}{pad}") for i in range(CHUNK_LINES // 4)]
        for start in range(0, len(lines), 16):
            processor.feed(lines[start : start + 16])
            assert held_bytes(processor) <= budget + 16 * 2 * MAX_RECORD_CHARS  # + one chunk
        assert processor.stats.skipped == {SkipReason.BAD_INT: len(lines)}
        assert len(processor._cache) < len(lines), "emptied for its bytes, not its entries"


def held_bytes(processor: FlowProcessor) -> int:
    """What the key cache's keys take, tokens of tuple keys included."""
    keys = list(processor._cache)
    tokens = [token for key in keys if isinstance(key, tuple) for token in key]
    return sum(map(sys.getsizeof, keys + tokens))
