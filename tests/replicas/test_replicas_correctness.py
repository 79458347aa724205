"""Two replicas of every service behind two gateways: the guarantees that scaling out depends on."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import aiohttp
import pytest

from tests.resilience.resilience_harness import WINBACK_OFFER, Suite, consented_customer

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
    assert len({reply["message_id"] for _, reply in replies}) == 1, replies[:3]
    statuses = Counter(reply["status"] for _, reply in replies)
    assert statuses["sent"] + statuses["queued"] <= 1 and statuses["duplicate"] >= 39, statuses
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
