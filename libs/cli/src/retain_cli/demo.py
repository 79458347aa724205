"""Demo data for the embedded default: a small Thai retail brand's customers, sent through the gateway.

Message ids are deterministic, so loading twice changes nothing (ingestion is idempotent on messageId).
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

FIRST_NAMES = ["Somchai", "Suda", "Niran", "Malee", "Anan", "Kanya", "Prasert", "Wipa", "Chai", "Ploy",
               "Kittisak", "Nok", "Thanawat", "Pim", "Arthit", "Dao", "Somsak", "Fon", "Ekkachai", "Jan"]
CATEGORIES = ["skincare", "haircare", "supplements", "fragrance", "bodycare"]


def demo_customers(now: datetime, *, count: int = 20, seed: int = 7) -> list[dict[str, Any]]:
    """Customers with varied histories: loyal, fading, lapsed, new, unhappy."""
    rng = random.Random(seed)
    customers = []
    for i in range(count):
        profile = ["loyal", "fading", "lapsed", "new", "unhappy"][i % 5]
        customers.append({
            "user_id": f"demo-{i + 1:03d}",
            "first_name": FIRST_NAMES[i % len(FIRST_NAMES)],
            "email": f"demo{i + 1:03d}@example.co.th",
            "phone": f"08{rng.randint(10000000, 99999999)}",
            "profile": profile,
            "index": i,
            "locale": "th" if i % 3 else "en",
        })
    return customers


def demo_events(now: datetime, customers: list[dict[str, Any]], *, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for c in customers:
        uid = c["user_id"]
        kind = c["profile"]
        first = now - timedelta(days={"loyal": 400, "fading": 300, "lapsed": 500, "new": 10, "unhappy": 200}[kind])
        last = now - timedelta(days={"loyal": 5, "fading": 70, "lapsed": 200, "new": 2, "unhappy": 20}[kind])
        orders = {"loyal": 12, "fading": 6, "lapsed": 4, "new": 1, "unhappy": 5}[kind]
        traits = {"first_name": c["first_name"], "email": c["email"], "phone": c["phone"], "locale": c["locale"],
                  "time_zone": "Asia/Bangkok"}
        identify: dict[str, Any] = {"type": "identify", "userId": uid, "messageId": f"{uid}-identify",
                                    "timestamp": first.isoformat(), "traits": traits}
        # Addresses for the other channels: a LINE user id for LINE followers, a push token for app users.
        if c["index"] % 2 == 0:
            traits["line_user_id"] = "U" + uuid.uuid5(uuid.NAMESPACE_DNS, uid).hex
        else:
            identify["context"] = {"device": {"token": f"demo-push-{uid}"}}
        events.append(identify)
        span = (last - first).total_seconds()
        for n in range(orders):
            at = first + timedelta(seconds=span * n / max(orders - 1, 1))
            category = rng.choice(CATEGORIES)
            revenue = round(rng.uniform(350, 2500), 2)
            events.append({"type": "track", "userId": uid, "event": "Product Viewed",
                           "messageId": f"{uid}-view-{n}", "timestamp": (at - timedelta(hours=1)).isoformat(),
                           "properties": {"category": category, "product_id": f"sku-{category}-{n % 3}"}})
            events.append({"type": "track", "userId": uid, "event": "Order Completed",
                           "messageId": f"{uid}-order-{n}", "timestamp": at.isoformat(),
                           "properties": {"order_id": f"{uid}-o{n}", "revenue": revenue, "currency": "THB",
                                          "category": category,
                                          "products": [{"product_id": f"sku-{category}-{n % 3}",
                                                        "category": category, "price": revenue}]}})
        if kind == "unhappy":
            for n in range(2):
                events.append({"type": "track", "userId": uid, "event": "Feedback Submitted",
                               "messageId": f"{uid}-feedback-{n}",
                               "timestamp": (last + timedelta(days=1 + n)).isoformat(),
                               "properties": {"score": 1 + n, "sentiment": "negative"}})
            events.append({"type": "track", "userId": uid, "event": "Ticket Opened",
                           "messageId": f"{uid}-ticket", "timestamp": (last + timedelta(days=3)).isoformat(),
                           "properties": {"ticket_id": f"{uid}-t1", "topic": "delivery"}})
        if kind in ("loyal", "new"):
            events.append({"type": "track", "userId": uid, "event": "App Opened",
                           "messageId": f"{uid}-app-open", "timestamp": (now - timedelta(days=1)).isoformat(),
                           "properties": {}})
    return events


def demo_consents(customers: list[dict[str, Any]]) -> dict[str, list[dict[str, str]]]:
    """Most customers opted in to some marketing; every fifth gave none (PDPA: no consent by default)."""
    result: dict[str, list[dict[str, str]]] = {}
    for i, c in enumerate(customers):
        if i % 5 == 4:
            continue
        channels = ["email", "sms", "line"] if i % 2 == 0 else ["email", "push"]
        result[c["user_id"]] = [
            {"channel": ch, "purpose": "marketing", "status": "granted", "source": "demo:signup-form",
             "lawful_basis": "consent", "policy_version": "2026-01"} for ch in channels
        ]
    return result


# Journey templates switched on for the demo before its events arrive, so the plays run on them.
DEMO_JOURNEYS = ("welcome_series", "post_purchase_feedback", "service_recovery", "winback_lapsed")


def load(gateway_url: str, api_key: str, *, now: datetime | None = None) -> dict[str, int]:
    """Install the demo journeys, then send the demo events and consents through the gateway; returns counts."""
    now = now or datetime.now(UTC).replace(microsecond=0)
    customers = demo_customers(now)
    events = demo_events(now, customers)
    headers = {"Authorization": f"Bearer {api_key}"}
    accepted = 0
    with httpx.Client(base_url=gateway_url, headers=headers, timeout=30) as client:
        for name in DEMO_JOURNEYS:
            reply = client.post(f"/v1/journeys/templates/{name}")
            if reply.status_code == 403:
                break  # an ingest-only key loads data but may not configure journeys
            reply.raise_for_status()
        for start in range(0, len(events), 200):
            reply = client.post("/v1/batch", json={"batch": events[start : start + 200]})
            reply.raise_for_status()
            accepted += len(events[start : start + 200])
        for user_id, consents in demo_consents(customers).items():
            client.put(f"/v1/customers/{user_id}/consents", json={"consents": consents}).raise_for_status()
    return {"customers": len(customers), "events": accepted, "journeys": len(DEMO_JOURNEYS)}
