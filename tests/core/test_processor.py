from flowexport.core.aggregate import FlowCounts
from flowexport.core.flows import Flow
from flowexport.core.logformat import DEFAULT_V2_FORMAT, PIPELINE_FORMAT, LogFormat
from flowexport.core.normalise import FlowFilter
from flowexport.core.processor import FlowProcessor, process_lines
from flowexport.core.reasons import SkipReason
from tests.flowlines import line

PG = Flow("10.0.1.15", "10.0.2.40", 5432, 6)


def test_both_legs_on_both_enis_make_one_flow_with_summed_counts() -> None:
    fmt = PIPELINE_FORMAT
    request = dict(srcaddr="10.0.1.15", dstaddr="10.0.2.40", srcport=48512, dstport=5432)
    response = dict(srcaddr="10.0.2.40", dstaddr="10.0.1.15", srcport=5432, dstport=48512)
    lines = [
        line(fmt, interface_id="eni-a", packets=3, bytes=300, **request),
        line(fmt, interface_id="eni-a", packets=2, bytes=200, **response),
        line(fmt, interface_id="eni-b", packets=3, bytes=300, **request),
        line(fmt, interface_id="eni-b", packets=2, bytes=200, **response),
    ]
    flows, stats = process_lines(lines, fmt)
    assert flows == [(PG, FlowCounts(records=4, packets=10, bytes=1000))]
    assert stats.records == 4
    assert stats.flowed == 4
    assert stats.skipped == {}


def test_skips_are_counted_by_reason_and_never_raise() -> None:
    fmt = DEFAULT_V2_FORMAT
    lines = [
        "",
        " ".join(fmt.fields),
        "2 1 eni-1 - - - - - - - 1 2 - NODATA",
        "2 1 eni-1 - - - - - - - 1 2 - SKIPDATA",
        "short line",
        line(fmt, srcaddr="300.1.1.1"),
        line(fmt, dstport="http"),
        line(fmt, packets="many"),
        line(fmt, bytes="-1"),
        line(fmt, packets="-"),  # a counter that is '-' counts as 0, the flow is kept
        line(fmt, action="REJECT"),
        line(fmt, action="SOMETIMES"),
        "\x00\xff garbage \u2603",
    ]
    processor = FlowProcessor(fmt)
    processor.feed(lines)
    stats = processor.stats
    assert stats.records == len(lines)
    assert stats.skipped == {
        SkipReason.EMPTY: 1,
        SkipReason.HEADER: 1,
        SkipReason.NODATA: 1,
        SkipReason.SKIPDATA: 1,
        SkipReason.FIELD_COUNT: 2,
        SkipReason.BAD_IP: 1,
        SkipReason.BAD_INT: 3,
        SkipReason.ACTION_FILTERED: 1,
        SkipReason.BAD_VALUE: 1,
    }
    assert stats.flowed == 1
    assert stats.malformed == 7
    assert processor.drain() == [(PG, FlowCounts(records=1, packets=0, bytes=1500))]


def test_custom_format_field_order() -> None:
    fmt = LogFormat.parse("${protocol} ${dstport} ${dstaddr} ${srcport} ${srcaddr} ${action}")
    flows, _ = process_lines(["17 53 10.0.0.2 40000 10.0.1.15 ACCEPT"], fmt)
    assert [f for f, _ in flows] == [Flow("10.0.1.15", "10.0.0.2", 53, 17)]


def test_cache_is_bounded_and_results_stay_right() -> None:
    processor = FlowProcessor(DEFAULT_V2_FORMAT, FlowFilter(), cache_size=10)
    lines = [line(DEFAULT_V2_FORMAT, srcport=40000 + i) for i in range(100)] * 2
    processor.feed(lines)
    assert len(processor._cache) <= 10
    assert processor.drain() == [(PG, FlowCounts(records=200, packets=2000, bytes=300000))]


def test_windows_drain_independently() -> None:
    processor = FlowProcessor(DEFAULT_V2_FORMAT)
    processor.feed([line(DEFAULT_V2_FORMAT)])
    first = processor.drain()
    processor.feed([line(DEFAULT_V2_FORMAT), line(DEFAULT_V2_FORMAT)])
    assert first == [(PG, FlowCounts(1, 10, 1500))]
    assert processor.drain() == [(PG, FlowCounts(2, 20, 3000))]
    assert processor.stats.records == 3
