"""Cap counters and contact slots: in Redis for every replica, or in memory for a single process.

The Redis store does each check-and-change in one Lua script, so two replicas racing for the last
unit of a cap cannot both win: the script checks every counter a message moves, then increments all
of them, or none. Connection failures surface as Unavailable, so callers fail closed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from retain_kit.errors import Unavailable

from retain_decision.domain.policies import Counter
from retain_decision.ports import PENDING, SlotBid

SEP = "\x1f"

# KEYS: counters. ARGV: limit per key (-1 = uncapped), then ttl per key. Returns 0 or the 1-based
# index of the first counter that would pass its limit.
_RESERVE = """
local n = #KEYS
for i = 1, n do
  local limit = tonumber(ARGV[i])
  if limit >= 0 then
    local current = tonumber(redis.call('GET', KEYS[i]) or '0')
    if current + 1 > limit then return i end
  end
end
for i = 1, n do
  redis.call('INCR', KEYS[i])
  if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], tonumber(ARGV[n + i])) end
end
return 0
"""

_RELEASE = """
for i = 1, #KEYS do
  local current = tonumber(redis.call('GET', KEYS[i]) or '0')
  if current > 0 then redis.call('DECR', KEYS[i]) end
end
return 0
"""

# KEYS: award, bids, deadline. ARGV: member, value, arbitration ms, slot seconds.
# Returns {awarded member or '', ms left in the collection window}.
_BID = """
local awarded = redis.call('GET', KEYS[1])
if awarded then return {awarded, 0} end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = tonumber(redis.call('GET', KEYS[3]) or '0')
if deadline == 0 then
  deadline = now + tonumber(ARGV[3])
  redis.call('SET', KEYS[3], deadline, 'EX', tonumber(ARGV[4]))
end
return {'', math.max(deadline - now, 0)}
"""

# KEYS: award, bids, deadline. ARGV: slot seconds. Highest value wins; equal values fall to the
# greatest member, so every replica computes the same winner.
_AWARD = """
local awarded = redis.call('GET', KEYS[1])
if awarded then return awarded end
local top = redis.call('ZREVRANGE', KEYS[2], 0, 0)
if #top == 0 then return '' end
redis.call('SET', KEYS[1], top[1], 'EX', tonumber(ARGV[1]))
redis.call('DEL', KEYS[2], KEYS[3])
return top[1]
"""

_RELEASE_SLOT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


def _slot_keys(slot: str) -> list[str]:
    return [f"{slot}:award", f"{slot}:bids", f"{slot}:deadline"]


def _split(entry: str) -> tuple[str, str]:
    member, _, offer_id = entry.partition(SEP)
    return member, offer_id


class RedisCounterStore:
    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._reserve = client.register_script(_RESERVE)
        self._release = client.register_script(_RELEASE)
        self._bid = client.register_script(_BID)
        self._award = client.register_script(_AWARD)
        self._release_slot = client.register_script(_RELEASE_SLOT)

    async def _run(self, call: Any) -> Any:
        try:
            return await call
        except (RedisError, OSError) as exc:
            raise Unavailable(f"cap counters unavailable: {exc}") from exc

    async def counts(self, keys: Sequence[str]) -> Mapping[str, int]:
        if not keys:
            return {}
        values = await self._run(self.client.mget(list(keys)))
        return {k: int(v) for k, v in zip(keys, values, strict=True) if v is not None and int(v)}

    async def reserve(self, counters: Sequence[Counter]) -> Counter | None:
        if not counters:
            return None
        args = [c.limit if c.limit is not None else -1 for c in counters] + [c.ttl_seconds for c in counters]
        refused = int(await self._run(self._reserve(keys=[c.key for c in counters], args=args)))
        return counters[refused - 1] if refused else None

    async def release(self, counters: Sequence[Counter]) -> None:
        if counters:
            await self._run(self._release(keys=[c.key for c in counters], args=[]))

    async def bid(self, slot: str, bid: SlotBid, *, arbitration_ms: int, slot_seconds: int) -> tuple[str, int]:
        entry = f"{bid.member}{SEP}{bid.offer_id}"
        awarded, left = await self._run(
            self._bid(keys=_slot_keys(slot), args=[entry, repr(bid.value), arbitration_ms, slot_seconds])
        )
        return (_split(str(awarded))[0] if awarded else "", int(left))

    async def award(self, slot: str, *, slot_seconds: int) -> tuple[str, str]:
        return _split(str(await self._run(self._award(keys=_slot_keys(slot), args=[slot_seconds]))))

    async def release_slot(self, slot: str, member: str) -> None:
        awarded = await self._run(self.client.get(f"{slot}:award"))
        if awarded and _split(str(awarded))[0] == member:
            await self._run(self._release_slot(keys=[f"{slot}:award"], args=[awarded]))

    async def claim(self, key: str, *, ttl_seconds: int) -> str | None:
        if await self._run(self.client.set(key, PENDING, nx=True, ex=ttl_seconds)):
            return None
        value = await self._run(self.client.get(key))
        # Expired between the two calls: the next attempt takes it.
        return PENDING if value is None else str(value)

    async def settle(self, key: str, outcome: str, *, ttl_seconds: int) -> None:
        await self._run(self.client.set(key, outcome, ex=ttl_seconds))

    async def unclaim(self, key: str) -> None:
        await self._run(self.client.delete(key))

    async def close(self) -> None:
        await self.client.aclose()


class MemoryCounterStore:
    """The same contract for one process (tests, a single-replica dev setup). Each method runs
    without awaiting in between, which on one event loop makes it as atomic as the Lua scripts."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self.clock = clock
        self.values: dict[str, tuple[int, float]] = {}
        self.slots: dict[str, tuple[str, float]] = {}
        self.bids: dict[str, dict[str, tuple[float, str]]] = {}
        self.deadlines: dict[str, float] = {}
        self.claims: dict[str, tuple[str, float]] = {}

    def _get(self, key: str) -> int:
        value, expires = self.values.get(key, (0, 0.0))
        return value if expires > self.clock() else 0

    async def counts(self, keys: Sequence[str]) -> Mapping[str, int]:
        return {k: self._get(k) for k in keys if self._get(k)}

    async def reserve(self, counters: Sequence[Counter]) -> Counter | None:
        for counter in counters:
            if counter.limit is not None and self._get(counter.key) + 1 > counter.limit:
                return counter
        now = self.clock()
        for counter in counters:
            value, expires = self.values.get(counter.key, (0, 0.0))
            if expires <= now:
                value, expires = 0, now + counter.ttl_seconds
            self.values[counter.key] = (value + 1, expires)
        return None

    async def release(self, counters: Sequence[Counter]) -> None:
        for counter in counters:
            value, expires = self.values.get(counter.key, (0, 0.0))
            if value > 0:
                self.values[counter.key] = (value - 1, expires)

    def _awarded(self, slot: str) -> str:
        member, expires = self.slots.get(slot, ("", 0.0))
        return member if expires > self.clock() else ""

    async def bid(self, slot: str, bid: SlotBid, *, arbitration_ms: int, slot_seconds: int) -> tuple[str, int]:
        awarded = self._awarded(slot)
        if awarded:
            return _split(awarded)[0], 0
        now = self.clock()
        self.bids.setdefault(slot, {})[f"{bid.member}{SEP}{bid.offer_id}"] = (bid.value, bid.member)
        deadline = self.deadlines.setdefault(slot, now + arbitration_ms / 1000)
        return "", max(int((deadline - now) * 1000), 0)

    async def award(self, slot: str, *, slot_seconds: int) -> tuple[str, str]:
        awarded = self._awarded(slot)
        if not awarded:
            bids = self.bids.pop(slot, {})
            self.deadlines.pop(slot, None)
            if not bids:
                return "", ""
            awarded = max(bids, key=lambda entry: (bids[entry][0], entry))
            self.slots[slot] = (awarded, self.clock() + slot_seconds)
        return _split(awarded)

    async def release_slot(self, slot: str, member: str) -> None:
        if _split(self._awarded(slot))[0] == member:
            self.slots.pop(slot, None)

    async def claim(self, key: str, *, ttl_seconds: int) -> str | None:
        value, expires = self.claims.get(key, ("", 0.0))
        if expires > self.clock():
            return value
        self.claims[key] = (PENDING, self.clock() + ttl_seconds)
        return None

    async def settle(self, key: str, outcome: str, *, ttl_seconds: int) -> None:
        self.claims[key] = (outcome, self.clock() + ttl_seconds)

    async def unclaim(self, key: str) -> None:
        self.claims.pop(key, None)

    async def close(self) -> None:
        await asyncio.sleep(0)
