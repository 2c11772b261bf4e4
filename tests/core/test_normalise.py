import pytest

from flowexport.core.flows import Flow
from flowexport.core.logformat import PIPELINE_FORMAT
from flowexport.core.normalise import FlowFilter, normalise
from flowexport.core.reasons import SkipReason
from flowexport.core.records import Record, parse_line
from tests.flowlines import line


def flow_of(flow_filter: FlowFilter | None = None, **values: object) -> Flow | SkipReason:
    record = parse_line(line(PIPELINE_FORMAT, **values), PIPELINE_FORMAT)
    assert isinstance(record, dict), record
    return normalise(record, flow_filter or FlowFilter())


def test_request_and_response_give_the_same_flow() -> None:
    request = flow_of(srcaddr="10.0.1.15", dstaddr="10.0.2.40", srcport=48512, dstport=5432)
    response = flow_of(srcaddr="10.0.2.40", dstaddr="10.0.1.15", srcport=5432, dstport=48512)
    assert request == response == Flow("10.0.1.15", "10.0.2.40", 5432, 6)


def test_packet_addresses_win_over_eni_addresses() -> None:
    # NAT gateway / EKS pod: the ENI address is the node, pkt-* the real endpoints.
    flow = flow_of(
        srcaddr="10.0.1.5", pkt_srcaddr="192.168.7.9", dstaddr="10.0.2.40", pkt_dstaddr="-"
    )
    assert flow == Flow("192.168.7.9", "10.0.2.40", 5432, 6)


def test_icmp_has_no_port() -> None:
    assert flow_of(protocol=1, srcport=0, dstport=0) == Flow("10.0.1.15", "10.0.2.40", 0, 1)
    assert flow_of(protocol=58, srcport="-", dstport="-", srcaddr="fe80::1", dstaddr="fe80::2") == (
        Flow("fe80::1", "fe80::2", 0, 58)
    )


def test_mixed_address_families_are_malformed() -> None:
    assert flow_of(srcaddr="10.0.0.1", dstaddr="2001:db8::1") is SkipReason.BAD_IP


def test_tcp_without_ports_is_missing_a_field() -> None:
    assert flow_of(srcport="-") is SkipReason.MISSING_FIELD
    assert flow_of(srcaddr="-") is SkipReason.MISSING_FIELD


def test_action_filter() -> None:
    assert flow_of(action="REJECT") is SkipReason.ACTION_FILTERED
    both = FlowFilter.build(["ACCEPT", "REJECT"])
    assert isinstance(flow_of(both, action="REJECT"), Flow)


def test_format_without_action_keeps_records() -> None:
    record: Record = {
        "srcaddr": "10.0.0.1",
        "dstaddr": "10.0.0.2",
        "srcport": 40000,
        "dstport": 443,
        "protocol": 6,
    }
    assert normalise(record, FlowFilter()) == Flow("10.0.0.1", "10.0.0.2", 443, 6)


def test_cidr_include_and_exclude() -> None:
    only_db = FlowFilter.build(include=["10.0.2.0/24"])
    assert isinstance(flow_of(only_db), Flow)
    assert flow_of(only_db, dstaddr="10.9.9.9") is SkipReason.CIDR_FILTERED
    no_db = FlowFilter.build(include=["10.0.0.0/8"], exclude=["10.0.2.40/32"])
    assert flow_of(no_db) is SkipReason.CIDR_FILTERED
    v6 = FlowFilter.build(include=["2001:db8::/32"])
    assert flow_of(v6) is SkipReason.CIDR_FILTERED
    assert isinstance(flow_of(v6, srcaddr="2001:db8::1", dstaddr="2001:db8::2"), Flow)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"actions": ["ACCEPT", "MAYBE"]}, "MAYBE"),
        ({"actions": []}, "at least one"),
        ({"include": ["10.0.0.0/33"]}, "10.0.0.0/33"),
        ({"exclude": ["nope"]}, "nope"),
    ],
)
def test_bad_filters_say_why(kwargs: dict[str, list[str]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FlowFilter.build(**kwargs)
