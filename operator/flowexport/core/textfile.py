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
BLOCK_BYTES = 16 * 2**20

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
        self._gzipped = gzipped

    def __iter__(self) -> Iterator[memoryview]:
        """Each block as a view of the start of its own buffer, which holds PADDING bytes
        more (see `FlowProcessor.feed_text`)."""
        carry = b""  # the start of a line that goes on in the next block, its \r unchanged
        skipping = False  # inside an over-long line already handed on
        last = False
        while not last:
            # The block is read straight into its own buffer, after the carried line start;
            # the buffer's zeros past what was read are the padding.
            data = bytearray(len(carry) + self._block_bytes + PADDING)
            data[: len(carry)] = carry
            size, last = self._fill(memoryview(data)[len(carry) : len(carry) + self._block_bytes])
            del data[len(carry) + size + PADDING :]
            end = len(carry) + size
            if data.find(b"\r", 0, end) >= 0:  # universal newlines, as Python's text mode
                text = bytes(data[:end])
                cr = b"\r" if text.endswith(b"\r") and not last else b""  # \n may follow
                text = text[: len(text) - len(cr)]
                text = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
                data = bytearray(text + cr + bytes(PADDING))
                end = len(text)
            if skipping:
                found = data.find(b"\n", 0, end)
                if found < 0:
                    carry = b"\r" if end < len(data) - PADDING else b""
                    continue
                del data[: found + 1]
                end -= found + 1
                skipping = False
            cut = data.rfind(b"\n", 0, end) + 1
            held = bytes(data[end : len(data) - PADDING])  # a \r whose \n may follow
            if end - cut > MAX_LINE_BYTES:
                data[cut:] = TOO_LONG_LINE + b"\n" + bytes(PADDING)
                end = cut = cut + len(TOO_LONG_LINE) + 1
                skipping = True  # up to the line's break (a held \r: its \n, if one follows)
            if last and self.error is None and not skipping:
                cut = end  # the last line, without a line break
            carry = bytes(data[cut:end]) + held
            if cut:
                yield memoryview(data)[:cut]

    def _fill(self, view: memoryview) -> tuple[int, bool]:
        """Read into `view` until it is full or the stream ends: the bytes read, and whether
        the stream ended (or failed: then `error` says why).

        A gzip stream is read a decompressed piece at a time (a buffered read of more would
        drop what it had decompressed when the stream fails part way); a plain one straight
        into the view."""
        size = 0
        try:
            while size < len(view):
                if self._gzipped:
                    piece = self._stream.read1(min(_PIECE, len(view) - size))  # type: ignore[attr-defined]
                    got = len(piece)
                    view[size : size + got] = piece
                else:
                    got = self._stream.readinto(view[size:]) or 0  # type: ignore[attr-defined]
                if not got:
                    return size, True
                size += got
        except READ_ERRORS as exc:
            self.error = describe(exc)
            return size, True
        return size, False


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
