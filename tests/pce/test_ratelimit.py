import asyncio

import pytest

from flowexport.pce.ratelimit import TokenBucket


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_burst_then_steady_rate() -> None:
    time = FakeTime()
    bucket = TokenBucket(rate_per_minute=60, burst=5, clock=time.clock, sleep=time.sleep)
    for _ in range(5):
        assert await bucket.acquire() == 0.0
    assert await bucket.acquire() == pytest.approx(1.0)
    assert await bucket.acquire() == pytest.approx(1.0)
    time.now += 10  # idle: the bucket refills, but never beyond the burst
    for _ in range(5):
        assert await bucket.acquire() == 0.0
    assert await bucket.acquire() == pytest.approx(1.0)


async def test_500_per_minute_key_budget_is_respected() -> None:
    time = FakeTime()
    bucket = TokenBucket(rate_per_minute=450, burst=10, clock=time.clock, sleep=time.sleep)
    await asyncio.gather(*(bucket.acquire() for _ in range(1000)))
    # 1000 requests take at least (1000 - burst) / 7.5 per second; never more than 500 a minute.
    assert time.now >= (1000 - 10) / 7.5 - 1e-6
    assert 1000 / (time.now / 60) <= 500


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(0)
