"""Two replicas of every service behind two gateways: the guarantees that scaling out depends on."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import redis

from tests.e2e.conftest import issue_key
from tests.replicas.conftest import DISCOVER_SECONDS
from tests.resilience.resilience_harness import WINBACK_OFFER, Sampler, Suite, consented_customer

pytestmark = [pytest.mark.e2e, pytest.mark.resilience]


def test_every_service_runs_twice(replicated: Suite) -> None:
    stack = replicated.stack
    for service in ("profile", "scoring", "decision", "channels", "audit", "gateway"):
        assert len(stack.instances(service)) == 2, service
        assert len(set(stack.replica_ports[service])) == 2
    assert stack.env()["RETAIN_PROFILE_ADDR"].startswith("ipv4:127.0.0.1:")
    assert not stack.dead()
    for url in stack.gateway_urls:
        with replicated.client() as client:
            reply = client.get(f"{url}/healthz")
        assert reply.status_code == 200, reply.text


async def _post_all(suite: Suite, bodies: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """POST /v1/messages for every body at once, alternating between the two gateways."""
    urls = suite.stack.gateway_urls
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(headers=suite.headers, timeout=timeout) as session:

        async def one(i: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            async with session.post(f"{urls[i % len(urls)]}/v1/messages", json=body) as resp:
                return resp.status, await resp.json()

        return await asyncio.gather(*(one(i, body) for i, body in enumerate(bodies)))


def test_caps_hold_exactly_across_replicas(replicated: Suite) -> None:
    user = f"cap-{uuid.uuid4().hex[:8]}"
    with replicated.client() as client:
        r = client.put("/v1/policies", json={"global_cap": {"per_day": 3}, "channel_caps": {"sms": {"per_day": 3}}})
        assert r.status_code == 200, r.text
        consented_customer(client, user)
    bodies = [{"customer_id": user, "channel": "sms", "offer_id": WINBACK_OFFER, "purpose": "marketing",
               "idempotency_key": f"{user}-{i}"} for i in range(100)]
    replies = asyncio.run(_post_all(replicated, bodies))
    statuses = Counter(body.get("status") for _, body in replies)
    assert all(code in (200, 202) for code, _ in replies), Counter(code for code, _ in replies)
    assert statuses["sent"] + statuses["queued"] == 3, statuses
    assert statuses["suppressed"] == 97, statuses
    # every refusal names its rule (the cap), none is a silent drop
    assert all(body["rule"] for _, body in replies if body["status"] == "suppressed")
    sent = [line for line in replicated.sent_lines() if line["idempotency_key"].startswith(f"{user}-")]
    assert len(sent) == 3, sent


def test_one_message_per_idempotency_key_across_replicas(replicated: Suite) -> None:
    user = f"idem-{uuid.uuid4().hex[:8]}"
    with replicated.client() as client:
        # No cap: only the idempotency key may stop the second copy.
        r = client.put("/v1/policies", json={})
        assert r.status_code == 200, r.text
        consented_customer(client, user)
    body = {"customer_id": user, "channel": "sms", "offer_id": WINBACK_OFFER, "purpose": "marketing",
            "idempotency_key": f"{user}-once"}
    replies = asyncio.run(_post_all(replicated, [body] * 40))
    assert all(code in (200, 202) for code, _ in replies), replies[:3]
    assert len({reply["message_id"] for _, reply in replies}) == 1, [
        (r["status"], r.get("rule"), r.get("reason")) for _, r in replies if r["status"] != "duplicate"]
    statuses = Counter(reply["status"] for _, reply in replies)
    assert statuses["sent"] + statuses["queued"] <= 1 and statuses["duplicate"] >= 39, (
        statuses, {(r["status"], r.get("rule"), r.get("reason")) for _, r in replies})
    sent = [line for line in replicated.sent_lines() if line["idempotency_key"] == f"{user}-once"]
    assert len(sent) == 1, sent


def test_audit_chain_stays_one_valid_chain(replicated: Suite) -> None:
    users = [f"aud-{uuid.uuid4().hex[:6]}-{i}" for i in range(10)]

    async def traffic() -> list[int]:
        urls = replicated.stack.gateway_urls
        async with aiohttp.ClientSession(headers=replicated.headers,
                                         timeout=aiohttp.ClientTimeout(total=60)) as session:

            async def consent(i: int, user: str) -> int:
                # consent changes and decisions both append audit records, from both gateways at once
                async with session.put(f"{urls[i % 2]}/v1/customers/{user}/consents", json={"consents": [
                        {"channel": "email", "purpose": "marketing", "status": "granted", "source": "replicas"}]}) as r:
                    return r.status

            async def decide(i: int, user: str) -> int:
                async with session.get(f"{urls[(i + 1) % 2]}/v1/customers/{user}/next-best-actions",
                                       params={"placement": "home"}) as r:
                    return r.status

            async def track(user: str) -> int:
                async with session.post(f"{urls[0]}/v1/track", json={"userId": user, "event": "App Opened"}) as r:
                    return r.status

            await asyncio.gather(*(track(u) for u in users))
            calls = [consent(i, u) for i, u in enumerate(users)] + [decide(i, u) for i, u in enumerate(users)] * 2
            return await asyncio.gather(*calls)

    codes = asyncio.run(traffic())
    assert set(codes) == {200}, Counter(codes)
    for gateway in (0, 1):
        with replicated.client(gateway) as client:
            verify = client.get("/v1/audit/verify")
            assert verify.status_code == 200, verify.text
            assert verify.json()["ok"] is True, verify.json()
            assert verify.json()["records_checked"] >= 30


JOURNEY_CUSTOMERS = 200
TRIGGER_BATCH = 10


class PendingWatch(Sampler):
    """Samples XPENDING of the workers' group: which consumers held entries (delivered, not yet acknowledged)
    at some point, i.e. which workers took a share of the events."""

    interval = 0.005

    def __init__(self, redis_url: str, stream: str, group: str) -> None:
        super().__init__()
        self.client = redis.Redis.from_url(redis_url, decode_responses=True)
        self.stream, self.group = stream, group
        self.held: Counter[str] = Counter()  # consumer -> most entries seen pending at once

    def group_exists(self) -> bool:
        try:
            return any(g["name"] == self.group for g in self.client.xinfo_groups(self.stream))
        except redis.ResponseError:  # no stream yet
            return False

    def sample(self) -> None:
        try:
            summary = self.client.xpending(self.stream, self.group)
        except redis.ResponseError:  # the workers have not created their group yet
            return
        for consumer in summary.get("consumers") or ():
            name, count = consumer["name"], int(consumer["pending"])
            self.held[name] = max(self.held[name], count)


def _until(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not reached within {timeout:.0f}s"
        time.sleep(0.25)


async def _put_consents(suite: Suite, users: list[str]) -> list[int]:
    urls = suite.stack.gateway_urls
    async with aiohttp.ClientSession(headers=suite.headers, timeout=aiohttp.ClientTimeout(total=60)) as session:
        limit = asyncio.Semaphore(20)

        async def one(i: int, user: str) -> int:
            async with limit, session.put(f"{urls[i % len(urls)]}/v1/customers/{user}/consents", json={
                    "consents": [{"channel": "email", "purpose": "marketing", "status": "granted",
                                  "source": "replicas"}]}) as r:
                return r.status

        return await asyncio.gather(*(one(i, u) for i, u in enumerate(users)))


def test_each_journey_step_fires_once_across_workers(replicated: Suite, notes: list[str]) -> None:
    """Two journey workers (one consumer group) and two decision replicas: trigger, wait, send for 200
    customers; every customer enters once, waits once and gets exactly one message."""
    stack = replicated.stack
    workers = stack.workers()
    assert len(workers) == 2 and not stack.dead(), (workers, stack.dead())
    # A workspace of its own: its first offer replaces the demo catalogue the other tests use, and its
    # event stream then carries only this test's events.
    workspace = f"ws_jrn_{uuid.uuid4().hex[:8]}"
    suite = Suite(stack=stack, workspace=workspace, key=issue_key(stack, workspace, "admin"))
    tag = uuid.uuid4().hex[:6]
    users = [f"jr-{tag}-{i}" for i in range(JOURNEY_CUSTOMERS)]
    offer_id, journey_id = "replica_note", "replica_note"
    with suite.client(timeout=60) as client:
        r = client.post("/v1/offers", json={
            "offer_id": offer_id, "name": "Checkout note", "play_type": "engagement", "channels": ["email"],
            "purpose": "marketing", "value": 10, "templates": [
                {"channel": "email", "locale": "en", "subject": "Your cart", "body": "Hi {{ first_name }}"}]})
        assert r.status_code == 200, r.text
        r = client.post("/v1/journeys", json={
            "journey_id": journey_id, "name": "Checkout note", "entry": {"reentry": "never"},
            "trigger": {"kind": "event", "event": "Checkout Started"},
            "steps": [{"step_id": "pause", "kind": "wait", "seconds": 1},
                      {"step_id": "note", "kind": "send", "offer_id": offer_id, "channels": ["email"]}]})
        assert r.status_code == 200, r.text
        r = client.post("/v1/batch", json={"batch": [
            {"type": "identify", "userId": u, "messageId": f"{u}-id",
             "traits": {"first_name": "Nok", "email": f"{u}@example.co.th"}} for u in users]})
        assert r.status_code == 200 and r.json()["accepted"] == len(users), r.text
    codes = asyncio.run(_put_consents(suite, users))
    assert set(codes) == {200}, Counter(codes)

    stream, group = f"retain:{workspace}:events", stack.env().get("RETAIN_DECISION_JOURNEY_GROUP", "journeys")
    consumers = {stack.consumer_of(w) for w in workers}
    with PendingWatch(stack.redis_url, stream, group) as watch:
        # Both workers find the new stream (a SCAN every DISCOVER_SECONDS) and block on it before the triggers
        # arrive (Redis 6.2 lists a consumer only once it was served, so that cannot be asked). The triggers
        # then come in small batches through both gateways: one published while a worker is busy with the
        # previous one goes to the other.
        _until(watch.group_exists, timeout=30, what="the workers' group on the new stream")
        time.sleep(2 * DISCOVER_SECONDS + 0.5)
        watch.held.clear()  # what the identify events left pending does not count
        for start in range(0, len(users), TRIGGER_BATCH):
            with suite.client(start // TRIGGER_BATCH % 2, timeout=60) as client:
                r = client.post("/v1/batch", json={"batch": [
                    {"type": "track", "userId": u, "event": "Checkout Started", "messageId": f"{u}-checkout",
                     "properties": {"total": 990}} for u in users[start:start + TRIGGER_BATCH]]})
            assert r.status_code == 200 and r.json()["accepted"] == len(users[start:start + TRIGGER_BATCH]), r.text
            time.sleep(0.1)

        def report() -> dict[str, Any]:
            with suite.client(timeout=30) as c:
                got = c.get(f"/v1/journeys/{journey_id}/report")
            assert got.status_code == 200, got.text
            return dict(got.json())

        def accounted() -> bool:
            # An instance completes when its send is recorded in the outbox; the send's outcome comes after.
            got = report()
            note = next((s for s in got["steps"] if s["step_id"] == "note"), None)
            outcomes = note["sent"] + sum(note["suppressed"].values()) + note["failed"] if note else 0
            return bool(got["completed"] >= len(users) and outcomes >= len(users))

        began = time.monotonic()
        _until(accounted, timeout=150, what="every customer through the journey and every send carried out")
        took = time.monotonic() - began
        _until(lambda: int(watch.client.xpending(stream, group)["pending"]) == 0, timeout=30,
               what="every trigger acknowledged")
    watch.client.close()
    assert not stack.dead(), stack.dead()
    # Both workers took a share of the triggers (the consumer group split them), nobody else did.
    assert set(watch.held) <= consumers and all(watch.held[c] > 0 for c in consumers), watch.held
    notes.append(f"journey: {len(users)} customers through trigger, wait and send in {took:.1f}s; "
                 f"most entries a worker held at once: {dict(watch.held)}")
    time.sleep(2.0)  # room for a wrongly repeated timer or send to show up

    final = report()
    assert (final["entered"], final["completed"], final["holdout"]) == (len(users), len(users), 0), final
    steps = {s["step_id"]: s for s in final["steps"]}
    assert steps["pause"]["entered"] == len(users), steps
    assert (steps["note"]["entered"], steps["note"]["sent"]) == (len(users), len(users)), steps
    assert (steps["note"]["failed"], steps["note"]["suppressed"]) == (0, {}), steps
    # Exactly one message per customer at the provider, each under its journey step's idempotency key.
    lines = [line for line in suite.sent_lines() if line["idempotency_key"].startswith("journey:")]
    per_recipient = Counter(line["recipient"] for line in lines)
    assert per_recipient == Counter({f"{u}@example.co.th": 1 for u in users}), per_recipient.most_common(3)
    assert len({line["idempotency_key"] for line in lines}) == len(users)
    # …and exactly one audited message per customer (the workspace has no other sends). Message records
    # carry the journey in their payload only, so they are not filtered by journey_id.
    records: list[dict[str, Any]] = []
    cursor = ""
    with suite.client(timeout=30) as client:
        for _ in range(10):
            page = client.get("/v1/audit/records", params={"kind": "message", "limit": 500, "cursor": cursor})
            assert page.status_code == 200, page.text
            records += page.json()["records"]
            cursor = page.json()["next_cursor"]
            if not cursor:
                break
    outcomes = Counter(r["outcome"] for r in records)
    per_customer = Counter(r["customer_id"] for r in records if r["outcome"] == "sent")
    assert len(per_customer) == len(users), (outcomes, len(per_customer))
    assert set(per_customer.values()) == {1}, per_customer.most_common(3)
    assert outcomes["suppressed"] == 0, outcomes
