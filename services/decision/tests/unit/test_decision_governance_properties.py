"""Property-based: over random interleavings of consent changes, cap settings, quiet hours, holdout
shares, clock moves and sends, nothing is ever dispatched without consent at decision time, above a
cap, in quiet hours, or to a holdout member.

The driver runs what the service runs for a send: the pure pipeline on a counter snapshot, then the
atomic reservation on a CounterStore (in memory here; one smaller run against real Redis). The
oracle re-derives every rule independently from the history of what was dispatched.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from retain_decision.counters import MemoryCounterStore, RedisCounterStore
from retain_decision.domain import policies
from retain_decision.domain.pipeline import CustomerContext, Request, decide
from retain_decision.domain.policies import CapLimit, GovernancePolicy, QuietHours
from retain_decision.ports import CounterStore
from test_pipeline import offer

START = datetime(2025, 3, 3, 0, 0, tzinfo=UTC)
CHANNELS = ("email", "sms")
# Holdout buckets under salt "prop": 0.98, 0.56, 0.14, 0.23 (so each share splits them differently).
CUSTOMERS = ("cus_a", "cus_b", "cus_d", "cus_e")
OFFER = offer("a", channels=CHANNELS)
caps = st.one_of(st.none(), st.integers(0, 3))

ops = st.one_of(
    st.tuples(st.just("consent"), st.sampled_from(CUSTOMERS), st.sampled_from(CHANNELS), st.booleans()),
    st.tuples(st.just("cap"), st.sampled_from(CHANNELS), caps, caps),
    st.tuples(st.just("global"), caps, caps),
    st.tuples(st.just("quiet"), st.one_of(st.none(), st.tuples(st.integers(0, 23), st.integers(0, 23),
                                                                  st.sampled_from(["hold", "drop"])))),
    st.tuples(st.just("holdout"), st.sampled_from([0.0, 0.2, 0.6])),
    st.tuples(st.just("advance"), st.integers(1, 60 * 30)),
)
sends = st.tuples(st.just("send"), st.sampled_from(CUSTOMERS), st.sampled_from(CHANNELS))
# Sends make up about two thirds of the steps, so caps are actually reached.
steps_strategy = st.lists(st.one_of(ops, sends, sends), min_size=1, max_size=60)


@dataclass
class World:
    policy: GovernancePolicy = field(default_factory=lambda: GovernancePolicy(holdout_salt="prop"))
    # Everyone starts consented, so that withdrawals (not the absence of grants) are what is tested.
    consents: dict[tuple[str, str], bool] = field(
        default_factory=lambda: {(c, ch): True for c in CUSTOMERS for ch in CHANNELS}
    )
    now: datetime = START
    dispatched: list[dict[str, Any]] = field(default_factory=list)


def _hhmm(hour: int) -> str:
    return f"{hour:02d}:00"


async def run(store: CounterStore, steps: list[tuple[Any, ...]], *, workspace: str) -> World:
    world = World()
    for step in steps:
        kind = step[0]
        if kind == "consent":
            world.consents[(step[1], step[2])] = step[3]
        elif kind == "cap":
            caps_ = dict(world.policy.channel_caps)
            caps_[step[1]] = CapLimit(step[2], step[3])
            world.policy = replace(world.policy, channel_caps=caps_)
        elif kind == "global":
            world.policy = replace(world.policy, global_cap=CapLimit(step[1], step[2]))
        elif kind == "quiet":
            window = step[1]
            quiet = QuietHours(_hhmm(window[0]), _hhmm(window[1]), window[2]) if window and window[0] != window[1] \
                else None
            world.policy = replace(world.policy, quiet_hours=quiet)
        elif kind == "holdout":
            world.policy = replace(world.policy, control_group_share=step[1])
        elif kind == "advance":
            world.now += timedelta(minutes=step[1])
        else:
            await send(store, world, step[1], step[2], workspace=workspace)
    return world


async def send(store: CounterStore, world: World, customer: str, channel: str, *, workspace: str) -> None:
    consents = {(ch, "marketing"): "granted" for (c, ch), ok in world.consents.items() if c == customer and ok}
    ctx = CustomerContext(customer_id=customer, workspace_id=workspace, consents=consents)
    tz = policies.zone("", world.policy.default_time_zone)
    keys = [c.key for ch in CHANNELS for c in policies.counters_for(
        world.policy, workspace_id=workspace, customer_id=customer, channel=ch, offer_id="a", now=world.now, tz=tz)]
    ctx = replace(ctx, counts=await store.counts(keys))
    result = decide(ctx, [OFFER], Request(channels=(channel,), limit=1, trigger="operator"), now=world.now,
                    policy=world.policy)
    if not result.actions:
        return
    (action,) = result.actions
    if action.deliver_after is not None:
        return  # held: released later through this same path
    if await store.reserve(action.counters) is None:
        world.dispatched.append(
            {"customer": customer, "channel": action.channel, "at": world.now, "policy": world.policy,
             "consented": world.consents.get((customer, action.channel), False)}
        )


def check(world: World) -> None:
    for i, sent in enumerate(world.dispatched):
        policy: GovernancePolicy = sent["policy"]
        at: datetime = sent["at"]
        assert sent["consented"], "dispatched without consent"
        assert not policies.bucket(sent["customer"], policy.holdout_salt) < policy.control_group_share, "holdout"
        local = at.astimezone(policies.zone("")).hour
        if policy.quiet_hours is not None:
            start, end = int(policy.quiet_hours.start[:2]), int(policy.quiet_hours.end[:2])
            quiet = start <= local < end if start < end else (local >= start or local < end)
            assert not quiet, "dispatched in quiet hours"
        before = world.dispatched[: i + 1]
        tz = policies.zone("")
        day = at.astimezone(tz).date()
        week = at.astimezone(tz).isocalendar()[:2]
        same_day = [s for s in before if s["customer"] == sent["customer"] and s["at"].astimezone(tz).date() == day]
        same_week = [s for s in before if s["customer"] == sent["customer"]
                     and s["at"].astimezone(tz).isocalendar()[:2] == week]
        ch_cap = policy.channel_caps.get(sent["channel"], CapLimit())
        for limit, sends in (
            (ch_cap.per_day, [s for s in same_day if s["channel"] == sent["channel"]]),
            (ch_cap.per_week, [s for s in same_week if s["channel"] == sent["channel"]]),
            (policy.global_cap.per_day, same_day),
            (policy.global_cap.per_week, same_week),
        ):
            assert limit is None or len(sends) <= limit, "dispatched above a cap"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps_strategy)
def test_governance_invariants_in_memory(steps: list[tuple[Any, ...]]) -> None:
    world = asyncio.run(run(MemoryCounterStore(), steps, workspace="ws"))
    check(world)


def test_the_property_run_does_dispatch_something() -> None:
    """Guards the property against passing vacuously: a plain consented send goes out."""
    steps = [("advance", 180), ("send", "cus_a", "email"), ("consent", "cus_a", "email", False),
             ("send", "cus_a", "email")]
    world = asyncio.run(run(MemoryCounterStore(), steps, workspace="ws"))
    assert len(world.dispatched) == 1


REDIS_URL = os.environ.get("REDIS_URL", "")


@pytest.mark.skipif(not REDIS_URL, reason="REDIS_URL not set")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps_strategy)
def test_governance_invariants_against_redis(steps: list[tuple[Any, ...]]) -> None:
    async def scenario() -> World:
        from retain_kit import redis_client

        store = RedisCounterStore(redis_client.connect(REDIS_URL))
        try:
            # A fresh workspace per example keeps examples from seeing each other's counters.
            return await run(store, steps, workspace=f"prop-{uuid.uuid4().hex[:12]}")
        finally:
            await store.close()

    check(asyncio.run(scenario()))
