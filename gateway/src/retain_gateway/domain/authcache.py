"""Bounded, short-lived cache of successful authentications (keyed by key hash, never the key)."""

from __future__ import annotations

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

    def put(self, key_hash: str, principal: Principal, *, expires_at: datetime | None = None) -> None:
        if self.ttl <= 0 or self.maxsize <= 0:
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

    def __len__(self) -> int:
        return len(self._entries)


def _now(reference: datetime) -> datetime:
    return datetime.now(reference.tzinfo)
