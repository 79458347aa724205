"""Publishes accepted events to `retain:{workspace_id}:events` Redis streams."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from retain_kit.redis_client import connect

from retain_profile.ports import StreamEvent

log = logging.getLogger(__name__)


# XADDs a whole batch in one round trip: ARGV = fields per entry, MAXLEN, then the entries' fields back to back.
# One script call costs a third of a 500-command pipeline (no per-command bookkeeping or replies).
XADD_MANY = """
local width = tonumber(ARGV[1])
local maxlen = ARGV[2]
local added = 0
for i = 3, #ARGV, width do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', unpack(ARGV, i, i + width - 1))
  added = added + 1
end
return added
"""


def stream_key(workspace_id: str) -> str:
    return f"retain:{workspace_id}:events"


STREAM_FIELDS = ("message_id", "customer_id", "event", "type", "timestamp", "properties")


def stream_fields(event: StreamEvent) -> dict[Any, Any]:
    return {
        "message_id": event.message_id,
        "customer_id": event.customer_id,
        "event": event.event,
        "type": event.type,
        "timestamp": event.timestamp.isoformat(),
        "properties": json.dumps(dict(event.properties), ensure_ascii=False, sort_keys=True),
    }


class RedisEventPublisher:
    def __init__(self, client: aioredis.Redis, *, maxlen: int) -> None:
        self.client = client
        self.maxlen = maxlen
        self._xadd_many = client.register_script(XADD_MANY)

    @classmethod
    def from_url(cls, url: str, *, maxlen: int) -> RedisEventPublisher:
        return cls(connect(url), maxlen=maxlen)

    @property
    def enabled(self) -> bool:
        return True

    async def publish(self, events: Sequence[StreamEvent]) -> bool:
        if not events:
            return True
        by_stream: dict[str, list[Any]] = {}
        for event in events:
            args = by_stream.setdefault(stream_key(event.workspace_id), [])
            for name, value in stream_fields(event).items():
                args += (name, value)
        try:
            for key, args in by_stream.items():
                await self._xadd_many(keys=[key], args=[2 * len(STREAM_FIELDS), self.maxlen, *args])
        except (RedisError, OSError) as exc:
            log.warning("redis publish failed, %d events left for the republisher: %s", len(events), exc)
            return False
        return True

    async def close(self) -> None:
        await self.client.aclose()


class DisabledPublisher:
    """Used when no Redis is configured: nothing is published and nothing is queued."""

    def __init__(self) -> None:
        log.info("REDIS_URL is not set: accepted events are stored but not published to a stream")

    @property
    def enabled(self) -> bool:
        return False

    async def publish(self, events: Sequence[StreamEvent]) -> bool:
        return True

    async def close(self) -> None:
        return None
