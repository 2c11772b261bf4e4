"""Write flow-log records as Parquet, the way AWS delivers flow logs to S3 (see
flowexport.core.parquet): one column per field, INT32/INT64/STRING as AWS types them, null
for `-`."""

from __future__ import annotations

from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq

from flowexport.core.logformat import LogFormat

INT32_FIELDS = frozenset({"version", "srcport", "dstport", "protocol", "tcp-flags", "traffic-path"})
INT64_FIELDS = frozenset({"packets", "bytes", "start", "end"})


def column_type(name: str) -> pa.DataType:
    if name in INT32_FIELDS:
        return pa.int32()
    if name in INT64_FIELDS:
        return pa.int64()
    return pa.string()


def records_table(lines: list[str], fmt: LogFormat, underscores: bool = True) -> pa.Table:
    """The records of well-formed lines in `fmt` as a table of AWS-typed columns."""
    rows = [line.split() for line in lines]
    columns = {}
    for i, name in enumerate(fmt.fields):
        kind = column_type(name)
        values: list[object] = [None if row[i] == "-" else row[i] for row in rows]
        if kind != pa.string():
            values = [None if v is None else int(str(v)) for v in values]
        columns[name.replace("-", "_") if underscores else name] = pa.array(values, kind)
    return pa.table(columns)


def write_parquet(
    target: str | IO[bytes],
    lines: list[str],
    fmt: LogFormat,
    underscores: bool = True,
    row_group_size: int | None = None,
) -> None:
    """Write the lines' records as a Parquet file (gzip pages, as AWS writes them)."""
    table = records_table(lines, fmt, underscores)
    pq.write_table(table, target, compression="gzip", row_group_size=row_group_size)
