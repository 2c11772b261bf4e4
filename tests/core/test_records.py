import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowexport.core.fields import FIELDS
from flowexport.core.logformat import DEFAULT_V2_FORMAT, PIPELINE_FORMAT, LogFormat
from flowexport.core.reasons import SkipReason
from flowexport.core.records import (
    COUNTER_MAX,
    MAX_ADDRESS_CHARS,
    MAX_INT_DIGITS,
    MAX_RECORD_CHARS,
    parse_int,
    parse_ip,
    parse_line,
)
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


@pytest.mark.parametrize("text", ["٤٤٣", "4_43", "+443", "４４３", "44³", "443\u200b", "-1"])
def test_integer_fields_take_only_ascii_digits(text: str) -> None:
    assert parse_int(text, "dstport") is None
    record = line(PIPELINE_FORMAT, dstport=text)
    assert parse_line(record, PIPELINE_FORMAT) is SkipReason.BAD_INT


def test_integer_ranges() -> None:
    assert parse_int("443", "dstport") == parse_int("00443", "dstport") == 443
    assert parse_int("65536", "dstport") is None
    assert parse_int(str(COUNTER_MAX), "bytes") == COUNTER_MAX
    assert parse_int(str(COUNTER_MAX + 1), "bytes") is None
    assert parse_int("0" + str(COUNTER_MAX), "bytes") == COUNTER_MAX
    assert parse_int("00" + str(COUNTER_MAX), "bytes") is None  # more than MAX_INT_DIGITS
    assert parse_int("9" * 5000, "bytes") is None
    assert parse_int("", "bytes") is None


@given(
    st.one_of(st.text(max_size=12), st.integers(0, 2**64).map(str)),
    st.sampled_from(["dstport", "protocol", "tcp-flags", "bytes"]),
)
def test_an_integer_field_is_its_ascii_digits_or_nothing(text: str, name: str) -> None:
    value = parse_int(text, name)
    if 0 < len(text) <= MAX_INT_DIGITS and all("0" <= c <= "9" for c in text):
        limit = {"dstport": 65535, "protocol": 255, "tcp-flags": 511}.get(name, COUNTER_MAX)
        assert value == (int(text) if int(text) <= limit else None)
    else:
        assert value is None


@given(st.integers(0, 65535), st.sampled_from(["", "_", "+", " ", "\u0663", "\u00b2"]))
def test_a_port_with_anything_but_ascii_digits_is_refused(port: int, extra: str) -> None:
    digits = str(port)
    assert parse_int(digits, "srcport") == port
    if extra:
        assert parse_int(digits[:1] + extra + digits[1:], "srcport") is None


def test_addresses_are_bounded_and_unscoped() -> None:
    longest = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
    assert len(longest) == MAX_ADDRESS_CHARS
    assert parse_ip(longest) == "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    assert parse_ip("0" + longest) is None
    assert parse_ip("fe80::1%eth0") is None
    assert parse_ip("fe80::1%" + "x" * 10_000) is None


def test_records_longer_than_the_limit_are_too_long() -> None:
    record = line(DEFAULT_V2_FORMAT)
    at_limit = record.replace("eni-", "eni-" + "x" * (MAX_RECORD_CHARS - len(record)), 1)
    assert len(at_limit) == MAX_RECORD_CHARS
    for text in (at_limit, at_limit + "\n", at_limit + "\r\n"):
        assert isinstance(parse_line(text, DEFAULT_V2_FORMAT), dict)
    assert parse_line(at_limit + "x", DEFAULT_V2_FORMAT) is SkipReason.TOO_LONG
    assert parse_line(" " * (MAX_RECORD_CHARS + 1), DEFAULT_V2_FORMAT) is SkipReason.TOO_LONG
    assert SkipReason.TOO_LONG.malformed
