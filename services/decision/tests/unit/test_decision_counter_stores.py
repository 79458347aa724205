"""The CounterStore contract, held by both the in-memory store and the Redis one (Lua scripts)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import pytest
from retain_decision.counters import MemoryCounterStore, RedisCounterStore
from retain_decision.domain.policies import Counter
from retain_decision.ports import CounterStore, SlotBid
from retain_kit import redis_client
from retain_kit.errors import Unavailable
from retain_kit.testing import free_port

REDIS_URL = os.environ.get("REDIS_URL", "")


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[CounterStore]:
    if request.param == "memory":
        yield MemoryCounterStore()
        return
    if not REDIS_URL:
        pytest.skip("REDIS_URL not set")
    redis_store = RedisCounterStore(redis_client.connect(REDIS_URL))
    yield redis_store
    await redis_store.close()


def counters(limit_a: int | None, limit_b: int | None) -> list[Counter]:
    tag = uuid.uuid4().hex
    return [
        Counter(f"cap:{{t:{tag}}}:a", limit_a, 60, "frequency_cap", "a"),
        Counter(f"cap:{{t:{tag}}}:b", limit_b, 60, "offer_cap", "b"),
    ]


async def test_reserve_moves_all_counters_or_none(store: CounterStore) -> None:
    cs = counters(3, 1)
    assert await store.reserve(cs) is None
    refused = await store.reserve(cs)
    assert refused is not None and refused.rule == "offer_cap"
    # The refusal left the other counter untouched.
    assert await store.counts([c.key for c in cs]) == {cs[0].key: 1, cs[1].key: 1}
    await store.release(cs)
    assert await store.counts([c.key for c in cs]) == {}
    assert await store.reserve(cs) is None


async def test_concurrent_reservations_never_pass_the_cap(store: CounterStore) -> None:
    cs = counters(3, None)
    results = await asyncio.gather(*(store.reserve(cs) for _ in range(100)))
    assert sum(1 for r in results if r is None) == 3
    assert (await store.counts([cs[0].key]))[cs[0].key] == 3
    assert (await store.counts([cs[1].key]))[cs[1].key] == 3  # uncapped counters count too


@pytest.mark.parametrize("high_first", [True, False])
async def test_slot_goes_to_the_highest_bid_in_the_window(store: CounterStore, high_first: bool) -> None:
    slot = f"slot:{{t:{uuid.uuid4().hex}}}:1"
    bids = [SlotBid("k-high", "big", 90.0), SlotBid("k-low", "small", 10.0)]
    if not high_first:
        bids.reverse()
    answers = [await store.bid(slot, b, arbitration_ms=200, slot_seconds=60) for b in bids]
    assert [a[0] for a in answers] == ["", ""] and all(0 < a[1] <= 200 for a in answers)
    await asyncio.sleep(answers[-1][1] / 1000)
    assert await store.award(slot, slot_seconds=60) == ("k-high", "big")
    assert await store.award(slot, slot_seconds=60) == ("k-high", "big")
    late = await store.bid(slot, SlotBid("k-late", "huge", 1000.0), arbitration_ms=200, slot_seconds=60)
    assert late == ("k-high", 0)
    await store.release_slot(slot, "k-low")  # not the holder: no effect
    assert (await store.award(slot, slot_seconds=60))[0] == "k-high"
    await store.release_slot(slot, "k-high")
    assert (await store.bid(slot, SlotBid("k-next", "x", 1.0), arbitration_ms=0, slot_seconds=60))[0] == ""


async def test_unreachable_redis_is_unavailable() -> None:
    dead = RedisCounterStore(redis_client.connect(f"redis://127.0.0.1:{free_port()}/0"))
    with pytest.raises(Unavailable):
        await dead.reserve(counters(1, 1))
    with pytest.raises(Unavailable):
        await dead.counts(["x"])
    await dead.close()
