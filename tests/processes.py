"""Start the project's own servers as real processes for tests; always stop them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def flowexport_server(*args: str, ready_timeout: float = 20.0) -> Iterator[dict[str, Any]]:
    """Run `flowexport ARGS` until it prints its JSON ready line; yield that; then stop it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "flowexport", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(ready_timeout)
    try:
        if not lines or not lines[0].strip():
            process.kill()
            _, err = process.communicate(timeout=10)
            raise RuntimeError(f"flowexport {args[0]} did not start: {err[-2000:]}")
        yield json.loads(lines[0])
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
