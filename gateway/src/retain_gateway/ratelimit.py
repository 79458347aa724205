"""Per-key fixed-window rate limit in Redis (INCR + EXPIRE), shared by every gateway replica."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


class RateLimiter:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        limit: int,
        window_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.limit = limit
        self.window = max(1, window_seconds)
        self._clock = clock

    async def hit(self, key_id: str) -> int | None:
        """Counts one request; returns the seconds to wait when the key is over its limit, else None."""
        now = self._clock()
        window = int(now // self.window)
        counter = f"retain:gateway:rate:{key_id}:{window}"
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(counter)
                # Twice the window so a slow clock on one replica never sees a half-expired counter.
                pipe.expire(counter, self.window * 2)
                count, _ = await pipe.execute()
        except RedisError:
            # Rate limiting protects capacity; it must not take the API down with it.
            log.warning("rate limiter unavailable; allowing request", exc_info=True)
            return None
        if int(count) <= self.limit:
            return None
        return max(1, math.ceil((window + 1) * self.window - now))
