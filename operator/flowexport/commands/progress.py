"""A one-line progress bar for terminals; silent when the stream is not a terminal."""

from __future__ import annotations

from typing import IO


class ProgressBar:
    """`label [#####.....] done/total unit`, redrawn in place on a TTY."""

    def __init__(self, stream: IO[str], total: int, label: str, unit: str, width: int = 30) -> None:
        self.stream = stream
        self.total = max(total, 0)
        self.label, self.unit, self.width = label, unit, width
        self.enabled = stream.isatty() and total > 0
        self.done = 0

    def advance(self, amount: int = 1) -> None:
        """Count progress and redraw."""
        self.done = min(self.total, self.done + amount)
        if self.enabled:
            filled = self.width * self.done // self.total
            bar = "#" * filled + "." * (self.width - filled)
            self.stream.write(f"\r{self.label} [{bar}] {self.done:,}/{self.total:,} {self.unit}")
            self.stream.flush()

    def close(self) -> None:
        """End the bar's line."""
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
