"""One flow-log input, whatever its kind, into a FlowProcessor: what `flowexport parse`,
`upload` and (next) the S3 reader share.

The kind is told by the content, never the name: `PAR1` starts a Parquet file, `1f 8b` a
gzip stream (of text), anything else is taken as text. The format is `--format` if given,
else the text's header line (flow logs delivered to S3 start with one) or the Parquet file's
columns, else AWS's default version 2 format.

Input that cannot be flow logs is refused with `UnusableInputError`, whose message says what was
wrong and the likely fix: a format without the fields a flow needs (from `--format`, a header
line or Parquet columns alike), a file that is not readable Parquet although it says so, or
records that all fail the format in force (binary data, a custom format read as the default).
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import IO

from flowexport.core.fields import FIELDS_BY_NAME
from flowexport.core.logformat import DEFAULT_V2_FORMAT, LogFormat, LogFormatError
from flowexport.core.normalise import FlowFilter
from flowexport.core.processor import FlowProcessor, ProcessStats
from flowexport.core.reasons import SkipReason
from flowexport.core.textfile import GZIP_MAGIC, TextBlocks, first_line

PARQUET_MAGIC = b"PAR1"

#: Bytes of a non-seekable Parquet input (stdin) held in memory before it spills to disk.
_SPOOL_BYTES = 64 * 2**20

#: Bytes of the start of a text input read for its header line and an error's wording.
_SAMPLE_BYTES = 2**16

#: Records skipped for none of these reasons are records in the format (even if filtered).
_NOT_RECORDS = frozenset({SkipReason.EMPTY, SkipReason.HEADER})


class FileKind(Enum):
    """What an input holds, told by its first bytes."""

    TEXT = "text"
    GZIP = "gzip"
    PARQUET = "parquet"


def sniff(head: bytes) -> FileKind:
    """The kind of an input from its first (at least four) bytes."""
    if head.startswith(PARQUET_MAGIC):
        return FileKind.PARQUET
    if head.startswith(GZIP_MAGIC):
        return FileKind.GZIP
    return FileKind.TEXT


class UnusableInputError(Exception):
    """Input that cannot be read as flow logs; the message says why and what to do, and
    `stats` counts the records read, if any were."""

    def __init__(self, message: str, stats: ProcessStats | None = None) -> None:
        super().__init__(message)
        self.stats = stats


@dataclass
class SourceRead:
    """What reading one input gave: its processor (flows and counts), its kind, where its
    format came from, and what stopped the read part way (the records before it count)."""

    processor: FlowProcessor
    kind: FileKind
    format_from: str
    error: str | None = None

    @property
    def stats(self) -> ProcessStats:
        """The input's counts."""
        return self.processor.stats


def read_source(
    stream: IO[bytes], explicit: LogFormat | None, flow_filter: FlowFilter
) -> SourceRead:
    """Read one input (a binary stream whose first bytes `peek` can show, or a seekable
    one) into a new FlowProcessor.

    Raises UnusableInputError (see the module's doc) and OSError when the input cannot be read at
    all; damage part way is reported in `SourceRead.error`.
    """
    head = _head(stream)
    kind = sniff(head)
    if kind is FileKind.PARQUET:
        return _read_parquet(stream, flow_filter)
    blocks = TextBlocks(stream, gzipped=kind is FileKind.GZIP)
    iterator = iter(blocks)
    first = next(iterator, b"")
    sample = bytes(first[:_SAMPLE_BYTES])  # where the format and the wording are found
    fmt, format_from = _text_format(sample, explicit)
    processor = FlowProcessor(fmt, flow_filter)
    processor.feed_text(first)
    processor.feed_texts(iterator)
    read = SourceRead(processor, kind, format_from, blocks.error)
    if not _has_records(processor.stats):
        raise UnusableInputError(
            _unmatched(processor, format_from, sample, blocks.error), processor.stats
        )
    return read


def _head(stream: IO[bytes]) -> bytes:
    peek = getattr(stream, "peek", None)
    if peek is not None:
        return bytes(peek(4)[:4])
    if stream.seekable():
        at = stream.tell()
        head = stream.read(4)
        stream.seek(at)
        return head
    raise ValueError("the stream can neither peek nor seek")


def _text_format(first: bytes, explicit: LogFormat | None) -> tuple[LogFormat, str]:
    """The format of a text input and where it came from."""
    if explicit is not None:
        return explicit, "--format"
    line = first_line(first)
    tokens = line.split() if line is not None else []
    if tokens and all(t in FIELDS_BY_NAME for t in tokens):
        try:
            return LogFormat.parse(line or ""), "header"
        except LogFormatError as exc:
            raise UnusableInputError(
                f"its header is not a usable log format ({exc}); the flow log must be "
                "recreated with ${srcaddr} ${dstaddr} ${srcport} ${dstport} ${protocol} in "
                "its format"
            ) from None
    return DEFAULT_V2_FORMAT, "default"


def _has_records(stats: ProcessStats) -> bool:
    """False when records were read and every one failed the format (none blank or a
    header line is a record in it, nor any flow, NODATA or filtered one)."""
    considered = stats.records - sum(stats.skipped.get(r, 0) for r in _NOT_RECORDS)
    return considered == 0 or stats.malformed < considered


def _unmatched(processor: FlowProcessor, format_from: str, first: bytes, error: str | None) -> str:
    stats = processor.stats
    fields = len(processor.format.fields)
    considered = stats.records - sum(stats.skipped.get(r, 0) for r in _NOT_RECORDS)
    reasons = Counter({r: n for r, n in stats.skipped.items() if r not in _NOT_RECORDS})
    why = ", ".join(f"{reason} {count}" for reason, count in reasons.most_common(3))
    if _looks_binary(first):
        return (
            f"it is neither flow-log text nor Parquet (binary data: none of its {considered} "
            f"lines is a flow-log record; {why}): give a flow-log file, plain text or gzip, "
            "or Parquet as AWS delivers flow logs to S3"
        )
    seen = _first_record_fields(first)
    has = f"; its first record has {seen}" if seen is not None else ""
    counted = f"none of its {considered} records matches"
    if error is not None:
        counted = f"none of the {considered} records read before the damage matches"
    if format_from == "--format":
        return (
            f"{counted} --format ({fields} fields{has}; {why}): pass the flow log's own "
            "LogFormat (`aws ec2 describe-flow-logs` shows it)"
        )
    if format_from == "header":
        return (
            f"{counted} its header line ({fields} fields{has}; {why}): the file looks "
            "damaged, or joined from flow logs of different formats"
        )
    return (
        f"no header line and {counted} AWS's default format ({fields} fields{has}; {why}): "
        "pass --format with the flow log's LogFormat"
    )


def _looks_binary(first: bytes) -> bool:
    """True when the start of an input is not text: a NUL byte, or more than a tenth of it
    control characters or bytes that are not UTF-8."""
    sample = first[:8192]
    if not sample:
        return False
    if b"\x00" in sample:
        return True
    text = sample.decode("utf-8", "replace")
    odd = sum(1 for c in text if c == "\ufffd" or (c < " " and c not in "\t\n\r\f\v"))
    return odd * 10 > len(text)


def _first_record_fields(first: bytes) -> int | None:
    """The field count of the first line that is neither blank nor a header."""
    for line in first.split(b"\n")[:-1] or [first]:
        tokens = line.decode("utf-8", "replace").split()
        if tokens and not all(t in FIELDS_BY_NAME for t in tokens):
            return len(tokens)
    return None


def _read_parquet(stream: IO[bytes], flow_filter: FlowFilter) -> SourceRead:
    """A Parquet input, read a row group at a time (a non-seekable one is spooled first)."""
    import pyarrow as pa  # noqa: PLC0415

    from flowexport.core.parquet import ParquetFlowLog  # noqa: PLC0415 - pyarrow when read

    with _seekable(stream) as source:
        try:
            log = ParquetFlowLog(source)
        except LogFormatError as exc:
            raise UnusableInputError(
                f"its Parquet columns are not a usable log format ({exc}): the flow log "
                "must be recreated with ${srcaddr} ${dstaddr} ${srcport} ${dstport} "
                "${protocol} in its format"
            ) from None
        except (pa.ArrowException, OSError) as exc:
            raise UnusableInputError(
                f"it starts like Parquet but is not readable Parquet ({exc}): the file is "
                "damaged or truncated; fetch it again"
            ) from None
        processor = FlowProcessor(log.format, flow_filter)
        error = None
        try:
            for batch in log.batches():
                processor.feed_batch(batch)
        except (pa.ArrowException, OSError) as exc:
            error = f"the Parquet data is damaged ({exc})"
    read = SourceRead(processor, FileKind.PARQUET, "parquet", error)
    if not _has_records(processor.stats):
        stats = processor.stats
        why = ", ".join(f"{r} {n}" for r, n in Counter(stats.skipped).most_common(3))
        raise UnusableInputError(
            f"none of its {stats.records} Parquet rows is a usable flow-log record ({why}): "
            "the file is not flow logs as AWS writes them",
            stats,
        )
    return read


class _seekable:  # noqa: N801 - a context manager used like a function
    """The stream itself when it can seek, else a temporary copy of it."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._copy: IO[bytes] | None = None

    def __enter__(self) -> IO[bytes]:
        if self._stream.seekable():
            return self._stream
        copy = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)
        shutil.copyfileobj(self._stream, copy)
        copy.seek(0)
        self._copy = copy
        return copy

    def __exit__(self, *_: object) -> None:
        if self._copy is not None:
            self._copy.close()
