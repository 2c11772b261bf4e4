"""The synthetic traffic looks like flow logs (both legs, both ENIs) and the core turns it into
exactly one client -> service flow per connection."""

from __future__ import annotations

from flowexport.core.logformat import PIPELINE_FORMAT, LogFormat
from flowexport.core.normalise import FlowFilter
from flowexport.core.processor import FlowProcessor
from flowexport.sim.traffic import Traffic


def process(fmt: LogFormat, lines: list[str], actions: tuple[str, ...]) -> set[tuple[str, ...]]:
    processor = FlowProcessor(fmt, FlowFilter.build(actions))
    processor.feed(lines)
    return {tuple(map(str, flow)) for flow, _ in processor.drain()}


def test_records_carry_both_legs_so_ephemeral_ports_appear_as_destinations() -> None:
    traffic = Traffic(PIPELINE_FORMAT, "vpc-1", connections=30)
    records = list(traffic.records(2000, now=1_700_000_000))
    dst_ports = {int(r.message.split(" ")[3]) for r in records if "NODATA" not in r.message}
    assert any(port >= 32768 for port in dst_ports), "response legs go to ephemeral ports"
    assert any("NODATA" in r.message for r in records)
    assert len({r.stream for r in records}) > 10  # one stream per ENI


def test_the_core_recovers_exactly_the_connections() -> None:
    traffic = Traffic(PIPELINE_FORMAT, "vpc-1", connections=40, reject_share=0.25)
    lines = [r.message for r in traffic.records(3000, now=1_700_000_000)]
    for actions in (("ACCEPT",), ("ACCEPT", "REJECT")):
        expected = {tuple(map(str, f)) for f in traffic.expected_flows(frozenset(actions))}
        assert process(PIPELINE_FORMAT, lines, actions) == expected
    assert len(traffic.expected_flows(frozenset({"REJECT"}))) > 0


def test_any_format_works_and_the_generator_is_deterministic() -> None:
    fmt = LogFormat.parse(
        "${version} ${srcaddr} ${dstaddr} ${srcport} ${dstport} ${protocol} "
        "${tcp-flags} ${action} ${log-status} ${interface-id}"
    )
    first = [r.message for r in Traffic(fmt, "vpc-1", seed=3).records(500, now=0)]
    again = [r.message for r in Traffic(fmt, "vpc-1", seed=3).records(500, now=0)]
    assert first == again
    assert all(len(m.split(" ")) == len(fmt.fields) for m in first)
