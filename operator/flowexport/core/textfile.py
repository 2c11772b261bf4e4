"""Read flow-log text in bounded blocks of whole lines: plain or gzip, from any binary stream.

A block is what `FlowProcessor.feed_text` takes: whole lines, `\\n` line breaks (universal
newlines: `\\r\\n` and a lone `\\r` end a line too, as Python's text mode reads them), the
last line of the input without a break if it had none. Memory follows neither line length
nor input size: a line longer than any record can be (over MAX_LINE_BYTES bytes, so surely
over MAX_RECORD_CHARS characters) is handed on as a placeholder of MAX_RECORD_CHARS + 1
bytes, which the processor counts as `too_long`, and the rest of it is read past in pieces.

A read error part way (a truncated or corrupt gzip stream, an I/O error) ends the blocks
there and is kept in `error`: the complete lines before the damage are handed on, none after.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from typing import IO

from flowexport.core.records import MAX_RECORD_CHARS

GZIP_MAGIC = b"\x1f\x8b"

#: Bytes read at a time; a block is at most this plus one line of MAX_LINE_BYTES.
BLOCK_BYTES = 8 * 2**20

#: The longest line held whole: no line of more bytes can be MAX_RECORD_CHARS characters of
#: UTF-8 or less (a character takes at most four bytes).
MAX_LINE_BYTES = 4 * MAX_RECORD_CHARS + 4

#: Bytes asked of the stream at a time.
_PIECE = 2**20

#: What an over-long line is handed on as: one byte too many to be a record.
TOO_LONG_LINE = b"x" * (MAX_RECORD_CHARS + 1)

#: Bytes after each block's end that a reader of the block may read (and never use).
PADDING = 16

#: What a damaged or unreadable input raises part way (gzip.BadGzipFile is an OSError).
READ_ERRORS = (OSError, EOFError, zlib.error)


def describe(exc: BaseException) -> str:
    """What went wrong reading an input, in words for the user."""
    if isinstance(exc, EOFError):
        return "the gzip data is truncated (the file ends before the end of the stream)"
    if isinstance(exc, zlib.error | gzip.BadGzipFile):
        return f"the gzip data is corrupt ({exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class TextBlocks:
    """The blocks of whole lines of a binary stream (gzip when `gzipped`)."""

    def __init__(
        self, stream: IO[bytes], gzipped: bool = False, block_bytes: int = BLOCK_BYTES
    ) -> None:
        self.error: str | None = None
        self._stream: IO[bytes] = (
            gzip.GzipFile(fileobj=stream, mode="rb") if gzipped else stream  # type: ignore[assignment]
        )
        self._block_bytes = block_bytes

    def __iter__(self) -> Iterator[memoryview]:
        """Each block as a view of the start of its own buffer, which holds PADDING bytes
        more (see `FlowProcessor.feed_text`)."""
        carry = b""  # the start of a line that goes on in the next piece
        skipping = False  # inside an over-long line already handed on
        pending_cr = False  # a piece ended in \r: a line break, unless \n follows
        for raw, last in self._pieces():
            piece = raw
            if pending_cr:
                piece = b"\r" + piece
                pending_cr = False
            if b"\r" in piece:
                if piece.endswith(b"\r") and not last:
                    piece, pending_cr = piece[:-1], True
                piece = piece.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if skipping:
                end = piece.find(b"\n")
                if end < 0:
                    continue
                piece, skipping = piece[end + 1 :], False
            data = bytearray(carry)
            data += piece
            cut = data.rfind(b"\n") + 1
            if len(data) - cut > MAX_LINE_BYTES:
                del data[cut:]
                data += TOO_LONG_LINE + b"\n"
                cut, skipping = len(data), True
            if last and self.error is None:
                cut = len(data)  # the last line, without a line break
            carry = bytes(data[cut:])
            if cut:
                data += bytes(PADDING)
                yield memoryview(data)[:cut]

    def _pieces(self) -> Iterator[tuple[bytes, bool]]:
        """The stream's bytes, about `block_bytes` at a time, and whether each is the last.

        Read in pieces of at most _PIECE bytes (a buffered read of more would drop what it
        had read when the stream fails part way)."""
        read = getattr(self._stream, "read1", self._stream.read)
        ask = min(_PIECE, self._block_bytes)
        while True:
            pieces: list[bytes] = []
            size = 0
            last = False
            try:
                while size < self._block_bytes:
                    piece = read(ask)
                    if not piece:
                        last = True
                        break
                    pieces.append(piece)
                    size += len(piece)
            except READ_ERRORS as exc:
                self.error = describe(exc)
                last = True
            yield b"".join(pieces), last
            if last:
                return


def first_line(block: bytes) -> str | None:
    """The first line of a block that is not blank, or None; None too when that line is
    over-long (no header is)."""
    start = 0
    while start < len(block):
        end = block.find(b"\n", start)
        end = len(block) if end < 0 else end
        if end - start > MAX_LINE_BYTES:
            return None
        text = block[start:end].decode("utf-8", "replace")
        if text.split():
            return None if len(text) > MAX_RECORD_CHARS else text
        start = end + 1
    return None
