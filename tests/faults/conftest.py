"""The fault suite runs the real operator through the e2e stack (see tests/e2e/conftest.py)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.e2e.conftest import Stack, stack
from tests.flowlines import connection_address, put_connections

__all__ = ["Traffic", "stack", "traffic"]


@dataclass
class Traffic:
    """Writes connections to the log group in the background: each tick `fresh` new ones and
    `repeats` of connections already written (the same flow again, as a real VPC logs it
    every aggregation interval)."""

    stack: Stack
    group: str = "/flowexport/prod"
    fresh: int = 10
    repeats: int = 5
    tick: float = 0.3
    written: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        logs = self.stack.aws("logs")
        while not self._stop.is_set():
            put_connections(logs, self.group, self.fresh, self.written)
            if self.written:
                start = max(0, self.written - self.repeats)
                put_connections(logs, self.group, min(self.repeats, self.written), start)
            self.written += self.fresh
            time.sleep(self.tick)

    def expected(self) -> set[str]:
        """The client address of every connection written."""
        return {connection_address(i) for i in range(self.written)}


@pytest.fixture
def traffic(stack: Stack) -> Iterator[Traffic]:
    writer = Traffic(stack)
    yield writer
    writer.stop()


def sigkill(stack: Stack) -> None:
    """Kill the operator outright (no chance to save anything), then reap it."""
    assert stack.operator.pid is not None
    os.kill(stack.operator.pid, signal.SIGKILL)
    stack.operator.stop()


def liveness_ms(stack: Stack) -> float:
    """How long the operator's liveness endpoint takes to answer, in milliseconds."""
    started = time.monotonic()
    httpx.get(f"http://127.0.0.1:{stack.operator.port}/healthz", timeout=10).raise_for_status()
    return (time.monotonic() - started) * 1000
