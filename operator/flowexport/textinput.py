"""Open flow-log files for reading: plain or gzip (by content, not name), or standard input."""

from __future__ import annotations

import gzip
import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, cast

_GZIP_MAGIC = b"\x1f\x8b"


@contextmanager
def open_lines(path: str) -> Iterator[IO[str]]:
    """A text stream of `path` (`-` is standard input); gzip is detected by its magic bytes.

    Undecodable bytes become U+FFFD instead of raising, so a damaged file costs the damaged
    lines (counted as malformed), never the run.
    """
    raw: IO[bytes] = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    try:
        # peek() needs a BufferedReader; a replaced stdin may be a plain binary stream.
        buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(cast(Any, raw))
        binary: IO[bytes] = buffered
        if buffered.peek(2)[:2] == _GZIP_MAGIC:
            binary = gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[assignment]
        yield io.TextIOWrapper(binary, encoding="utf-8", errors="replace", newline=None)
    finally:
        if path != "-":
            raw.close()
