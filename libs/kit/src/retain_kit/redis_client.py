"""Redis client factory (redis.asyncio); the URL comes from settings."""

from __future__ import annotations

import redis.asyncio as aioredis


def connect(url: str) -> aioredis.Redis:
    if not url:
        raise ValueError("REDIS_URL is not set")
    return aioredis.Redis.from_url(url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0)
