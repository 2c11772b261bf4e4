"""A PCE simulator served over real loopback HTTP for each test, and a client factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from flowexport.pce.client import PCEClient, PCECredentials, RetryPolicy
from flowexport.sim.pce import PCESimConfig, PCESimulator
from flowexport.sim.serve import ServerThread

API_KEY = "api_1a2b3c4d5e6f"
API_SECRET = "s3cr3t-7f9e1d2c-do-not-log"  # distinctive, so tests can prove it never leaks


@dataclass
class SimPCE:
    """A running simulator: its URL, its object, and the thread serving it."""

    url: str
    sim: PCESimulator
    server: ServerThread
    delays: list[float] = field(default_factory=list)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the simulator's loop (thread-safe access to its state)."""
        return self.server.call(fn)

    def faults(self, **values: Any) -> None:
        self.call(lambda: self.sim.set_faults(**values))

    def requests(self) -> list[dict[str, Any]]:
        return list(self.call(lambda: list(self.sim.state.requests)))

    def client(self, secret: str = API_SECRET, org: int = 1, **kwargs: Any) -> PCEClient:
        """A client whose backoff sleeps are recorded in `delays` and cut short."""

        async def sleep(seconds: float) -> None:
            self.delays.append(seconds)

        kwargs.setdefault("retry", RetryPolicy(attempts=4, base_delay=0.5, max_delay=8.0))
        kwargs.setdefault("rate_per_minute", 100_000)
        kwargs.setdefault("sleep", sleep)
        return PCEClient(self.url, org, PCECredentials(API_KEY, secret), **kwargs)


def make_config(**overrides: Any) -> PCESimConfig:
    values: dict[str, Any] = {"api_keys": {API_KEY: API_SECRET}, "rate_limit_per_minute": 0}
    values.update(overrides)
    return PCESimConfig(**values)


@pytest.fixture
def pce() -> Iterator[SimPCE]:
    sim = PCESimulator(make_config())
    server = ServerThread(sim.app)
    url = server.start()
    try:
        yield SimPCE(url, sim, server)
    finally:
        server.stop()


@pytest.fixture
async def client(pce: SimPCE) -> AsyncIterator[PCEClient]:
    async with pce.client() as c:
        yield c
