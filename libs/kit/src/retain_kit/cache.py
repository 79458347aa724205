"""A tiny per-process TTL cache for configuration read on hot paths (offers, policies)."""

from __future__ import annotations

import time
from typing import Generic, TypeVar

V = TypeVar("V")


class TtlCache(Generic[V]):
    """Values expire `ttl` seconds after they were put; a ttl of 0 disables caching."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._items: dict[str, tuple[float, V]] = {}

    def get(self, key: str) -> V | None:
        item = self._items.get(key)
        if item is None or item[0] < time.monotonic():
            return None
        return item[1]

    def put(self, key: str, value: V) -> None:
        if self.ttl > 0:
            self._items[key] = (time.monotonic() + self.ttl, value)

    def forget(self, key: str) -> None:
        self._items.pop(key, None)
