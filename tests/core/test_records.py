import pytest

from flowexport.core.fields import FIELDS
from flowexport.core.logformat import DEFAULT_V2_FORMAT, PIPELINE_FORMAT, LogFormat
from flowexport.core.reasons import SkipReason
from flowexport.core.records import parse_line
from tests.flowlines import line

# AWS's documented examples (flow-logs-records-examples).
AWS_ACCEPTED = (
    "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 "
    "1418530010 1418530070 ACCEPT OK"
)
AWS_NODATA = "2 123456789010 eni-1a2b3c4d - - - - - - - 1431280876 1431280934 - NODATA"
AWS_SKIPDATA = "2 123456789010 eni-4821349f - - - - - - - 1431280876 1431280934 - SKIPDATA"


def test_default_format_record() -> None:
    record = parse_line(AWS_ACCEPTED, DEFAULT_V2_FORMAT)
    assert isinstance(record, dict)
    assert record["srcaddr"] == "172.31.16.139"
    assert record["dstport"] == 22
    assert record["protocol"] == 6
    assert record["bytes"] == 4249
    assert record["action"] == "ACCEPT"
    assert record["interface-id"] == "eni-1235b8ca123456789"


@pytest.mark.parametrize(
    ("text", "reason"), [(AWS_NODATA, SkipReason.NODATA), (AWS_SKIPDATA, SkipReason.SKIPDATA)]
)
def test_nodata_and_skipdata(text: str, reason: SkipReason) -> None:
    assert parse_line(text, DEFAULT_V2_FORMAT) is reason


def test_dash_is_null() -> None:
    record = parse_line(line(PIPELINE_FORMAT, instance_id="-", tcp_flags="-"), PIPELINE_FORMAT)
    assert isinstance(record, dict)
    assert record["instance-id"] is None
    assert record["tcp-flags"] is None


def test_ipv6_is_canonicalised() -> None:
    text = line(PIPELINE_FORMAT, srcaddr="2001:0DB8:0000:0000:0000:0000:0000:0001", type="IPv6")
    record = parse_line(text, PIPELINE_FORMAT)
    assert isinstance(record, dict)
    assert record["srcaddr"] == "2001:db8::1"


def test_every_version_field_parses() -> None:
    every = LogFormat(tuple(f.name for f in FIELDS))
    values = {
        "resource-type": "TransitGateway",
        "tgw-id": "tgw-0123",
        "packets-lost-no-route": "0",
        "packets-lost-blackhole": "3",
        "ecs-cluster-name": "prod",
        "reject-reason": "BPA",
        "region": "us-east-1",
        "az-id": "use1-az4",
        "traffic-path": "1",
        "pkt-src-aws-service": "S3",
    }
    text = line(every, **{k.replace("-", "_"): v for k, v in values.items()})
    record = parse_line(text, every)
    assert isinstance(record, dict)
    assert record["packets-lost-blackhole"] == 3
    assert record["reject-reason"] == "BPA"
    assert record["pkt-src-aws-service"] == "S3"
    assert record["tgw-id"] == "tgw-0123"
    assert len(record) == len(FIELDS)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"srcaddr": "10.0.0.256"}, SkipReason.BAD_IP),
        ({"pkt_dstaddr": "nonsense"}, SkipReason.BAD_IP),
        ({"srcport": "65536"}, SkipReason.BAD_INT),
        ({"protocol": "x"}, SkipReason.BAD_INT),
        ({"bytes": "-5"}, SkipReason.BAD_INT),
        ({"action": "MAYBE"}, SkipReason.BAD_VALUE),
        ({"log_status": "WHATEVER"}, SkipReason.BAD_VALUE),
        ({"srcaddr": "bad", "log_status": "NODATA"}, SkipReason.NODATA),
    ],
)
def test_malformed_values_have_reasons(overrides: dict[str, str], reason: SkipReason) -> None:
    assert parse_line(line(PIPELINE_FORMAT, **overrides), PIPELINE_FORMAT) is reason


def test_structure_reasons() -> None:
    assert parse_line("", DEFAULT_V2_FORMAT) is SkipReason.EMPTY
    assert parse_line("   \n", DEFAULT_V2_FORMAT) is SkipReason.EMPTY
    header = " ".join(DEFAULT_V2_FORMAT.fields)
    assert parse_line(header, DEFAULT_V2_FORMAT) is SkipReason.HEADER
    assert parse_line(AWS_ACCEPTED + " extra", DEFAULT_V2_FORMAT) is SkipReason.FIELD_COUNT
    assert parse_line("2 123", DEFAULT_V2_FORMAT) is SkipReason.FIELD_COUNT
    assert SkipReason.FIELD_COUNT.malformed
    assert not SkipReason.NODATA.malformed
