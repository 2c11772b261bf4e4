"""Read flow-log files line by line in bounded memory: plain or gzip (by content), or stdin."""

from __future__ import annotations

import gzip
import io
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from itertools import chain, islice
from typing import IO, Any, cast

from flowexport.core.records import MAX_RECORD_CHARS

_GZIP_MAGIC = b"\x1f\x8b"

#: The most of a line handed on: a record at the limit plus a line break, or one character
#: more, which the core counts as `too_long`.
LINE_PIECE = MAX_RECORD_CHARS + 2

#: Characters read at a time while passing over the rest of an over-long line.
_SKIP_PIECE = 2**16

#: What a damaged or unreadable input raises part way (gzip.BadGzipFile is an OSError).
READ_ERRORS = (OSError, EOFError, zlib.error)


class FlowLines:
    """The lines of one input, none longer than LINE_PIECE characters.

    A longer line is handed on as its first LINE_PIECE characters (the core counts it as
    `too_long`) and the rest is read past in bounded pieces, never held whole. A read error
    part way (truncated or corrupt gzip, I/O error) ends the lines there and is kept in
    `error`: every line before the damage is handed on, none after.
    """

    def __init__(self, stream: IO[str]) -> None:
        self.error: str | None = None
        # Lines are read a batch at a time and handed on by C-level iteration: a Python
        # generator step per line was a tenth of `flowexport parse`'s time.
        self._lines = chain.from_iterable(self._batches(stream))

    def __iter__(self) -> Iterator[str]:
        return self._lines

    def _batches(self, stream: IO[str]) -> Iterator[list[str]]:
        pieces = iter(partial(stream.readline, LINE_PIECE), "")
        while True:
            batch: list[str] = []
            try:
                # list.extend keeps what it appended before an error: the lines before
                # the damage are handed on.
                batch.extend(islice(pieces, BATCH_LINES))
                if batch and max(map(len, batch)) == LINE_PIECE:
                    batch = self._cut(batch, stream)
            except READ_ERRORS as exc:
                self.error = describe(exc)
                yield _without_continuations(batch)[0]
                return
            if not batch:
                return
            yield batch

    def _cut(self, batch: list[str], stream: IO[str]) -> list[str]:
        """The batch with each over-long line's continuation pieces left out (those past the
        batch are read past in bounded pieces)."""
        kept, skipping = _without_continuations(batch)
        if skipping:
            skip = partial(stream.readline, _SKIP_PIECE)
            while (rest := skip()) and rest[-1] != "\n":
                pass
        return kept


#: Lines read at a time.
BATCH_LINES = 1024


def _without_continuations(batch: list[str]) -> tuple[list[str], bool]:
    """The pieces that start a line (an over-long line's first LINE_PIECE characters kept,
    the pieces after it left out), and whether the last line goes on past the batch."""
    kept: list[str] = []
    skipping = False
    for piece in batch:
        if skipping:
            skipping = piece[-1] != "\n"
            continue
        kept.append(piece)
        skipping = len(piece) == LINE_PIECE and piece[-1] != "\n"
    return kept, skipping


def describe(exc: BaseException) -> str:
    """What went wrong reading an input, in words for the user."""
    if isinstance(exc, EOFError):
        return "the gzip data is truncated (the file ends before the end of the stream)"
    if isinstance(exc, zlib.error | gzip.BadGzipFile):
        return f"the gzip data is corrupt ({exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


@contextmanager
def open_lines(path: str) -> Iterator[FlowLines]:
    """The lines of `path` (`-` is standard input); gzip is detected by its magic bytes.

    Undecodable bytes become U+FFFD instead of raising, so a damaged file costs the damaged
    lines (counted as malformed), never the run. Raises OSError when the file cannot be
    opened; damage found while reading is reported in `FlowLines.error` instead.
    """
    raw: IO[bytes] = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    try:
        # peek() needs a BufferedReader; a replaced stdin may be a plain binary stream.
        buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(cast(Any, raw))
        binary: IO[bytes] = buffered
        if buffered.peek(2)[:2] == _GZIP_MAGIC:
            binary = gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[assignment]
        yield FlowLines(io.TextIOWrapper(binary, encoding="utf-8", errors="replace", newline=None))
    finally:
        if path != "-":
            raw.close()
