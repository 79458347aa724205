"""A per-provider-instance token bucket: keeps our send rate under what the vendor publishes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from pydantic import BaseModel, Field


class TokenBucket:
    """Allows `rate` acquisitions per second on average and bursts of up to `burst`.

    `rate <= 0` disables limiting. Waiters are served in arrival order (one lock), so a burst of
    sends cannot starve an earlier caller.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.capacity = max(burst if burst is not None else max(rate, 1.0), 1.0)
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._lock = asyncio.Lock()

    async def acquire(self, tokens: float = 1.0) -> float:
        """Wait until `tokens` are available and take them; returns the seconds spent waiting."""
        if self.rate <= 0:
            return 0.0
        if tokens > self.capacity:
            raise ValueError(f"cannot take {tokens} tokens from a bucket of {self.capacity}")
        waited = 0.0
        async with self._lock:
            self._refill()
            if self._tokens < tokens:
                waited = (tokens - self._tokens) / self.rate
                await self._sleep(waited)
                self._refill()
            # Holding the lock, nobody else took the refill; clamping absorbs float rounding, which
            # would otherwise leave a deficit of 1e-16 tokens and a sleep the clock cannot resolve.
            self._tokens = max(self._tokens - tokens, 0.0)
            return waited

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now


class RateLimitConfig(BaseModel):
    """Mixed into every vendor config: the send rate this instance keeps to (0 disables limiting)."""

    rate_per_second: float = Field(default=0.0, ge=0.0)
    # Defaults to one second's worth of sends.
    burst: float | None = Field(default=None, gt=0.0)

    def bucket(self) -> TokenBucket:
        return TokenBucket(self.rate_per_second, burst=self.burst)
