"""Parquet flow logs (as AWS delivers them to S3) give what the same records give as text."""

from __future__ import annotations

import io
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flowexport.core.flows import Flow
from flowexport.core.logformat import DEFAULT_V2_FORMAT, PIPELINE_FORMAT, LogFormat
from flowexport.core.normalise import FlowFilter
from flowexport.core.parquet import ParquetFlowLog, field_name
from flowexport.core.sources import FileKind, UnusableInputError, read_source, sniff
from tests.flowlines import line
from tests.flowparquet import write_parquet

V5 = LogFormat.parse(
    "${version} ${account-id} ${interface-id} ${srcaddr} ${dstaddr} ${srcport} ${dstport} "
    "${protocol} ${packets} ${bytes} ${start} ${end} ${action} ${log-status} ${vpc-id} "
    "${subnet-id} ${instance-id} ${tcp-flags} ${type} ${pkt-srcaddr} ${pkt-dstaddr} "
    "${flow-direction}"
)


def mixed_lines(fmt: LogFormat, count: int, seed: int = 3) -> list[str]:
    """Well-formed records: both legs, REJECT, NODATA, IPv6, packet addresses, ICMP."""
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        client = f"10.0.{rng.randrange(4)}.{rng.randrange(1, 30)}"
        server = f"10.1.{rng.randrange(4)}.{rng.randrange(1, 30)}"
        if rng.random() < 0.1:
            client, server = f"2001:db8::{rng.randrange(1, 99):x}", "2001:db8:0:0::a"
        cport, sport = rng.randrange(32768, 61000), rng.choice([22, 443, 5432, 8080])
        values: dict[str, object] = dict(
            srcaddr=client, dstaddr=server, srcport=cport, dstport=sport, tcp_flags=2
        )
        roll = rng.random()
        if roll < 0.3:
            values = dict(srcaddr=server, dstaddr=client, srcport=sport, dstport=cport)
            values["tcp_flags"] = rng.choice([18, 0])
        elif roll < 0.35:
            values["action"] = "REJECT"
        elif roll < 0.4:
            values = dict(
                srcaddr="-", dstaddr="-", srcport="-", dstport="-", protocol="-", action="-"
            )
            values.update(log_status="NODATA", tcp_flags="-", packets="-", bytes="-")
        elif roll < 0.45:
            values.update(protocol=1, srcport=0, dstport=0)
        elif roll < 0.5:
            values.update(pkt_srcaddr="192.168.7.7")
        lines.append(line(fmt, **values))
    return lines


def text_and_parquet(lines: list[str], fmt: LogFormat, **kwargs: object) -> tuple[object, object]:
    flow_filter = FlowFilter.build(["ACCEPT", "REJECT"])
    header = " ".join(fmt.fields) + "\n"
    text = read_source(
        io.BufferedReader(io.BytesIO((header + "\n".join(lines) + "\n").encode())),  # type: ignore[arg-type]
        None,
        flow_filter,
    )
    buffer = io.BytesIO()
    write_parquet(buffer, lines, fmt, **kwargs)  # type: ignore[arg-type]
    buffer.seek(0)
    parquet = read_source(buffer, None, flow_filter)
    assert parquet.kind is FileKind.PARQUET and text.kind is FileKind.TEXT
    assert parquet.processor.format == fmt
    text_flows, parquet_flows = text.processor.drain(), parquet.processor.drain()
    assert text_flows and parquet_flows == text_flows
    skipped = dict(text.stats.skipped)
    skipped.pop("header")  # the text's header line is a record; Parquet has none
    assert parquet.stats.skipped == skipped
    assert parquet.stats.records == text.stats.records - 1
    return text, parquet


@pytest.mark.parametrize("fmt", [DEFAULT_V2_FORMAT, V5, PIPELINE_FORMAT], ids=["v2", "v5", "ops"])
def test_parquet_gives_the_flows_and_counts_of_the_same_text(fmt: LogFormat) -> None:
    text_and_parquet(mixed_lines(fmt, 3000), fmt, row_group_size=700)


def test_hyphenated_column_names_are_taken_too() -> None:
    text_and_parquet(mixed_lines(V5, 500), V5, underscores=False)


def test_row_groups_are_read_one_at_a_time_key_columns_only() -> None:
    buffer = io.BytesIO()
    write_parquet(buffer, mixed_lines(V5, 1000), V5, row_group_size=100)
    buffer.seek(0)
    log = ParquetFlowLog(buffer)
    assert (log.rows, log.row_groups) == (1000, 10)
    batches = list(log.batches())
    assert [b.num_rows for b in batches] == [100] * 10
    assert set(batches[0].schema.names) == {
        "srcaddr", "dstaddr", "srcport", "dstport", "protocol", "action", "log-status",
        "tcp-flags", "pkt-srcaddr", "pkt-dstaddr",
    }  # fmt: skip


def test_columns_are_named_as_aws_names_them() -> None:
    assert field_name("log_status") == field_name("log-status") == "log-status"
    assert field_name("pkt_src_aws_service") == "pkt-src-aws-service"
    assert field_name("year") is None  # a Hive partition column


def test_kinds_are_told_by_content() -> None:
    assert sniff(b"PAR1") is FileKind.PARQUET
    assert sniff(b"\x1f\x8b\x08\x00") is FileKind.GZIP
    assert sniff(b"2 12") is FileKind.TEXT


def test_parquet_without_the_fields_a_flow_needs_is_unusable() -> None:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"srcaddr": ["10.0.0.1"], "dstaddr": ["10.0.0.2"]}), buffer)
    buffer.seek(0)
    with pytest.raises(UnusableInputError, match="lacks field"):
        read_source(buffer, None, FlowFilter())


def test_malformed_parquet_values_are_skipped_like_malformed_text() -> None:
    table = pa.table(
        {
            "srcaddr": ["10.0.0.1", "300.0.0.1", "10.0.0.1", None, "10.0.0.1 x"],
            "dstaddr": ["10.0.0.2", "10.0.0.2", "10.0.0.2", None, "10.0.0.2"],
            "srcport": pa.array([40000, 40000, 70000, None, 40000], pa.int32()),
            "dstport": pa.array([443, 443, 443, None, 443], pa.int32()),
            "protocol": pa.array([6, 6, 6, None, 6], pa.int32()),
            "action": ["ACCEPT", "ACCEPT", "ACCEPT", None, "ACCEPT"],
            "log_status": ["OK", "OK", "OK", "NODATA", "OK"],
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    buffer.seek(0)
    read = read_source(buffer, None, FlowFilter())
    assert read.processor.drain() == [(Flow("10.0.0.1", "10.0.0.2", 443, 6), 1)]
    assert read.stats.skipped == {"bad_ip": 2, "bad_int": 1, "nodata": 1}


def test_a_file_that_starts_like_parquet_but_is_not_is_unusable() -> None:
    with pytest.raises(UnusableInputError, match="starts like Parquet but is not readable"):
        read_source(io.BytesIO(b"PAR1" + bytes(range(256)) * 8), None, FlowFilter())


def test_parquet_text_columns_are_read_as_dictionaries_and_give_the_same_flows() -> None:
    lines = mixed_lines(V5, 2000, seed=9)
    buffer = io.BytesIO()
    write_parquet(buffer, lines, V5, row_group_size=300)
    buffer.seek(0)
    batch = next(ParquetFlowLog(buffer).batches())
    assert pa.types.is_dictionary(batch.column("srcaddr").type)
    assert not pa.types.is_dictionary(batch.column("srcport").type)
    text_and_parquet(lines, V5, row_group_size=300)
