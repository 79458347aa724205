import asyncio

import pytest
from retain_channels.providers.ratelimit import RateLimitConfig, TokenBucket


class FakeClock:
    """Time that moves only when the bucket sleeps, so waits are exact."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def test_burst_is_free_then_sends_are_spaced_by_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(5.0, burst=2, clock=clock, sleep=clock.sleep)
    waits = [await bucket.acquire() for _ in range(5)]
    assert waits[:2] == [0.0, 0.0]
    assert waits[2:] == pytest.approx([0.2, 0.2, 0.2])
    assert clock.now == pytest.approx(100.6)


async def test_idle_time_refills_up_to_capacity_only() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, burst=3, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        await bucket.acquire()
    clock.now += 60.0
    waits = [await bucket.acquire() for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0] and waits[3] == pytest.approx(0.1)


async def test_zero_rate_disables_limiting() -> None:
    clock = FakeClock()
    bucket = TokenBucket(0.0, clock=clock, sleep=clock.sleep)
    assert [await bucket.acquire() for _ in range(100)] == [0.0] * 100
    assert clock.sleeps == []


async def test_more_than_capacity_is_refused() -> None:
    with pytest.raises(ValueError, match="bucket of 2"):
        await TokenBucket(1.0, burst=2).acquire(3)


async def test_real_clock_concurrent_waiters_are_throttled() -> None:
    bucket = RateLimitConfig(rate_per_second=50, burst=1).bucket()
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.gather(*(bucket.acquire() for _ in range(6)))
    # One token up front, five more at 50/s.
    assert loop.time() - start >= 0.09


def test_config_rejects_negative_rates() -> None:
    with pytest.raises(ValueError):
        RateLimitConfig(rate_per_second=-1)
