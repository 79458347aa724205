"""Bounded, short-lived cache of successful authentications (keyed by key hash, never the key)."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime

from retain_gateway.domain.apikey import Principal


class AuthCache:
    """LRU with a TTL: a revoked key keeps working on another replica for at most `ttl` seconds."""

    def __init__(
        self, *, ttl: float, maxsize: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.maxsize = maxsize
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        # Lookups of uncached keys under way, by key hash: concurrent requests with the same key share one
        # (keys.authenticate), so an expired entry costs one database read, not one per request in flight.
        self.pending: dict[str, asyncio.Future[Principal | None]] = {}
        # Bumped by every invalidation: a lookup that started before one must not cache what it read.
        self.generation = 0

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and self.maxsize > 0

    def get(self, key_hash: str) -> Principal | None:
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        deadline, principal = entry
        if self._clock() >= deadline:
            del self._entries[key_hash]
            return None
        self._entries.move_to_end(key_hash)
        return principal

    def put(
        self, key_hash: str, principal: Principal, *, expires_at: datetime | None = None, generation: int | None = None
    ) -> None:
        """`generation`: the cache's generation when the lookup began; stale (an invalidation since) is dropped."""
        if not self.enabled or (generation is not None and generation != self.generation):
            return
        deadline = self._clock() + self.ttl
        if expires_at is not None:
            # Never serve a key from cache past its own expiry.
            deadline = min(deadline, self._clock() + (expires_at - _now(expires_at)).total_seconds())
        self._entries[key_hash] = (deadline, principal)
        self._entries.move_to_end(key_hash)
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)

    def invalidate_key(self, key_id: str) -> None:
        for key_hash in [h for h, (_, p) in self._entries.items() if p.key_id == key_id]:
            del self._entries[key_hash]
        # Requests from now on look the key up afresh rather than join a lookup that may predate the change.
        self.generation += 1
        self.pending.clear()

    def __len__(self) -> int:
        return len(self._entries)


def _now(reference: datetime) -> datetime:
    return datetime.now(reference.tzinfo)
