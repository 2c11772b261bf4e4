"""A client-side token bucket that keeps one API key under the PCE's request rate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class TokenBucket:
    """`rate_per_minute` requests per minute on average, bursts of up to `burst`."""

    def __init__(
        self,
        rate_per_minute: float,
        burst: int = 10,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate_per_minute <= 0:
            raise ValueError("rate_per_minute must be positive")
        self.rate = rate_per_minute / 60.0
        self.burst = max(1, burst)
        self._tokens = float(self.burst)
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._lock = asyncio.Lock()

    async def acquire(self) -> float:
        """Take one token, waiting as long as needed; returns the seconds waited."""
        async with self._lock:
            waited = 0.0
            while True:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                # The tolerance and the 1 ms floor keep rounding (0.9999999999999999 tokens)
                # from turning into sleeps too short to move the clock, i.e. a spin.
                if self._tokens >= 1 - 1e-9:
                    self._tokens = max(0.0, self._tokens - 1)
                    return waited
                delay = max((1 - self._tokens) / self.rate, 0.001)
                await self._sleep(delay)
                waited += delay
