"""The operator (`flowexport run`) as a real subprocess, for the demo and the tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from flowexport.sim.moto import free_ports


class OperatorProcess:
    """`flowexport run -n NAMESPACE --settle 0 ARGS`, with its liveness and metrics endpoints
    on free loopback ports and its output appended to `log`. With `namespace=None`, ARGS say
    what to watch (`--all-namespaces`, or `--namespace` options).

    start() returns once kopf's liveness endpoint answers (JSON, so that another server that
    took the port first cannot pass for it). stop() sends SIGTERM (kopf finishes
    gracefully) and kills the process if that takes too long, so a stuck operator never
    outlives its caller. start() may be called again after stop().
    """

    def __init__(
        self,
        kubeconfig: Path,
        log: Path,
        namespace: str | None,
        args: Sequence[str] = (),
        launcher: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        """`launcher` prefixes the command (e.g. setpriv to drop privileges, which execs, so the
        pid stays the operator's); `env` is added to this process's environment."""
        self.kubeconfig, self.log, self.namespace = kubeconfig, log, namespace
        self.args = list(args)
        self.launcher, self.env = list(launcher), dict(env or {})
        self.port, self.metrics_port = free_ports(2)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Start it; raises RuntimeError (with the log's tail) if it does not become live."""
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    *self.launcher,
                    sys.executable,
                    "-m",
                    "flowexport",
                    "run",
                    *(["--namespace", self.namespace] if self.namespace else []),
                    "--settle",
                    "0",
                    "--metrics-port",
                    str(self.metrics_port),
                    "--liveness",
                    f"http://127.0.0.1:{self.port}/healthz",
                    *self.args,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"the operator exited at start:\n{self.tail()}")
            with contextlib.suppress(httpx.TransportError):
                answer = httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1)
                # kopf answers JSON; anything else on the port is not this operator
                if answer.is_success and answer.headers.get("content-type", "").startswith(
                    "application/json"
                ):
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the operator did not become live:\n{self.tail()}")

    def stop(self, timeout: float = 45.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code (None if not started)."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        return process.returncode

    @property
    def pid(self) -> int | None:
        """The running process's id."""
        return self.process.pid if self.process is not None else None

    def metric(self, sample: str) -> float | None:
        """The value of one exposed sample, e.g. 'flowexport_workers', or None."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith(sample + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    def tail(self, lines: int = 60) -> str:
        """The last `lines` lines of its log."""
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> OperatorProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
