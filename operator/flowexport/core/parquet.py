"""Read VPC flow logs that AWS delivered to S3 as Apache Parquet, row group by row group.

What AWS writes (the AWS VPC user guide, "Flow log records" and "Publish flow logs to Amazon
S3": https://docs.aws.amazon.com/vpc/latest/userguide/flow-logs.html and
https://docs.aws.amazon.com/vpc/latest/userguide/flow-logs-s3.html, `FileFormat: parquet`):
one column per field of the flow log's format, in its order; INT_32 for `version`, `srcport`,
`dstport`, `protocol`, `tcp-flags` and `traffic-path`, INT_64 for `packets`, `bytes`, `start`
and `end`, STRING for every other field; Gzip-compressed pages; files start with `PAR1`.
Athena's DDL for those files
(https://docs.aws.amazon.com/athena/latest/ug/vpc-flow-logs-parquet.html) spells the columns
with underscores (`log_status`, `pkt_srcaddr`), while the format spells them with hyphens;
both spellings are taken. A value AWS has none for (`-` in text) may be a null or `-`.

`ParquetFlowLog` takes a path or any seekable binary file object (a local file, an S3 object
read through ranged GETs) and reads only the key columns (those that decide a flow), one row
group at a time: memory follows the row group, not the file. pyarrow is imported only here
and in `core.columnar`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq

from flowexport.core.fields import FIELDS_BY_NAME, KEY_FIELDS
from flowexport.core.logformat import LogFormat

#: Rows handed on at a time (a row group is read a batch at a time).
BATCH_ROWS = 256 * 1024


def field_name(column: str) -> str | None:
    """The flow-log field a Parquet column holds (`log_status` and `log-status` alike)."""
    name = column.strip().lower().replace("_", "-")
    return name if name in FIELDS_BY_NAME else None


class ParquetFlowLog:
    """A Parquet flow-log file: its format (from its columns) and its key columns in record
    batches, named by field.

    Raises `pyarrow.ArrowInvalid` (or OSError) when the file is not readable Parquet, and
    `LogFormatError` when its columns lack a field every flow needs.
    """

    def __init__(
        self,
        source: str | IO[bytes],
        *,
        dictionaries: bool = True,
        batch_rows: int = BATCH_ROWS,
        buffer_bytes: int = 0,
    ) -> None:
        """`dictionaries`: text key columns as their dictionaries (fast; but pyarrow then
        decodes a whole row group's column at once); False, with `buffer_bytes` (pages read
        through a buffer that big) and smaller `batch_rows`, keeps memory to a batch (mode
        s3's objects of up to 75 MB, row groups of any size)."""
        self._batch_rows = batch_rows
        schema = pq.read_schema(source) if isinstance(source, str) else None
        if schema is None:
            at = source.tell()  # type: ignore[union-attr]
            schema = pq.ParquetFile(source).schema_arrow
            source.seek(at)  # type: ignore[union-attr]
        columns: dict[str, str] = {}
        for column in schema.names:
            name = field_name(column)
            if name is not None and name not in columns:
                columns[name] = column
        self._columns = columns
        self.format = LogFormat(tuple(columns))
        # Text columns come as the dictionaries their pages hold (AWS's and pyarrow's
        # writers dictionary-encode them): each distinct address decoded and hashed once.
        text = [
            column
            for name, column in columns.items()
            if dictionaries and name in KEY_FIELDS and pa.types.is_string(schema.field(column).type)
        ]
        self._file = pq.ParquetFile(source, read_dictionary=text or None, buffer_size=buffer_bytes)
        self.rows = self._file.metadata.num_rows
        self.row_groups = self._file.num_row_groups

    def batches(self, extra: Sequence[str] = ()) -> Iterator[pa.RecordBatch]:
        """The key columns of every row (and the `extra` fields the file has), renamed to
        their fields, a row group at a time."""
        names = [name for name in self._columns if name in KEY_FIELDS or name in extra]
        columns = [self._columns[name] for name in names]
        for group in range(self.row_groups):
            for batch in self._file.iter_batches(
                batch_size=self._batch_rows, row_groups=[group], columns=columns, use_threads=False
            ):
                yield pa.RecordBatch.from_arrays(batch.columns, names=names)
