"""Demo data for the embedded default: a small Thai retail brand's customers, sent through the gateway.

Message ids are deterministic, so loading twice changes nothing (ingestion is idempotent on messageId).
The history is back-dated; today's activity (`demo_fresh`) is timestamped now so that it starts the
demo journeys, and its ids are keyed on the day: a second load the same day adds nothing.
"""

from __future__ import annotations

import random
import time
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


def demo_history(now: datetime, customers: list[dict[str, Any]], *, seed: int = 7) -> list[dict[str, Any]]:
    """Each customer's identify and back-dated orders, views, feedback, tickets and app opens."""
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


def demo_fresh(now: datetime, customers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Today's activity, a few minutes old: new customers sign up for the app (welcome series), unhappy
    ones complain again (service recovery), loyal ones order (post-purchase feedback). Back-dated
    history cannot start journeys (a trigger ignores events older than the journey's max_event_age)."""
    day = now.date().isoformat()
    events: list[dict[str, Any]] = []
    for c in customers:
        uid, kind = c["user_id"], c["profile"]
        if kind == "new":
            events.append({"type": "track", "userId": uid, "event": "Signed Up", "messageId": f"{uid}-signup-{day}",
                           "timestamp": (now - timedelta(minutes=10)).isoformat(),
                           "properties": {"method": "app", "after": "guest checkout"}})
        elif kind == "unhappy":
            events.append({"type": "track", "userId": uid, "event": "Feedback Submitted",
                           "messageId": f"{uid}-feedback-{day}", "timestamp": (now - timedelta(minutes=8)).isoformat(),
                           "properties": {"score": 1, "sentiment": "negative", "topic": "delivery"}})
        elif kind == "loyal":
            category = CATEGORIES[c["index"] % len(CATEGORIES)]
            revenue = round(random.Random(f"{uid}|{day}").uniform(350, 2500), 2)
            events.append({"type": "track", "userId": uid, "event": "Order Completed",
                           "messageId": f"{uid}-order-{day}", "timestamp": (now - timedelta(minutes=5)).isoformat(),
                           "properties": {"order_id": f"{uid}-o-{day}", "revenue": revenue, "currency": "THB",
                                          "category": category,
                                          "products": [{"product_id": f"sku-{category}-0", "category": category,
                                                        "price": revenue}]}})
    return events


def demo_events(now: datetime, customers: list[dict[str, Any]], *, seed: int = 7) -> list[dict[str, Any]]:
    """Everything `load` sends: the history, then today's activity."""
    return demo_history(now, customers, seed=seed) + demo_fresh(now, customers)


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


def demo_service_consents(customers: list[dict[str, Any]]) -> dict[str, list[dict[str, str]]]:
    """Unhappy customers with a ticket agreed to hear about it (service purpose, contract basis), all but
    the last: the service-recovery journey then both sends and shows a consent suppression."""
    unhappy = [c for c in customers if c["profile"] == "unhappy"]
    return {
        c["user_id"]: [{"channel": ch, "purpose": "service", "status": "granted", "source": "demo:support-ticket",
                        "lawful_basis": "contract", "policy_version": "2026-01"} for ch in ("email", "line")]
        for c in unhappy[:-1]
    }


# Journey templates switched on for the demo. Event-triggered ones go in before the events arrive;
# scheduled ones once the journey worker has seen the customers (a schedule's first run is at once).
DEMO_JOURNEYS = ("welcome_series", "post_purchase_feedback", "service_recovery", "winback_lapsed")


def load(
    gateway_url: str, api_key: str, *, now: datetime | None = None, settle_seconds: float = 30.0
) -> dict[str, int]:
    """Install the demo journeys, send the demo history and consents, then today's activity through the
    gateway; returns counts. A key that may not configure journeys loads the data only."""
    now = now or datetime.now(UTC).replace(microsecond=0)
    customers = demo_customers(now)
    history, fresh = demo_history(now, customers), demo_fresh(now, customers)
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=gateway_url, headers=headers, timeout=30) as client:
        journeys = _journey_plan(client)
        event_driven = [j for j, kind in journeys.items() if kind == "event"]
        _install(client, event_driven)
        accepted = _send(client, history)
        for consents in (demo_consents(customers), demo_service_consents(customers)):
            for user_id, given in consents.items():
                client.put(f"/v1/customers/{user_id}/consents", json={"consents": given}).raise_for_status()
        accepted += _send(client, fresh)
        settled = _await_entries(client, event_driven, settle_seconds) if journeys else False
        _install(client, [j for j, kind in journeys.items() if kind != "event"])
    return {"customers": len(customers), "events": accepted, "fresh": len(fresh), "journeys": len(journeys),
            "settled": int(settled)}


def load_today(gateway_url: str, api_key: str, *, now: datetime | None = None) -> int:
    """On a later start: only today's activity (message ids keyed on the day, so a second start on the
    same day changes nothing), so the demo journeys keep entering customers day after day. Returns how
    many events were new."""
    now = now or datetime.now(UTC).replace(microsecond=0)
    fresh = demo_fresh(now, demo_customers(now))
    with httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30) as client:
        return _send(client, fresh)


def _journey_plan(client: httpx.Client) -> dict[str, str]:
    """The demo journeys not installed yet, with their trigger kind; empty for a key that may not
    configure journeys (an ingest-only key loads data but may not configure journeys)."""
    reply = client.get("/v1/journeys/templates")
    if reply.status_code == 403:
        return {}
    reply.raise_for_status()
    kinds = {t["name"]: t["definition"]["trigger"]["kind"] for t in reply.json()}
    installed = {j["journey_id"] for j in client.get("/v1/journeys").raise_for_status().json()}
    return {name: kinds[name] for name in DEMO_JOURNEYS if name not in installed}


def _install(client: httpx.Client, names: list[str]) -> None:
    for name in names:
        client.post(f"/v1/journeys/templates/{name}").raise_for_status()


def _send(client: httpx.Client, events: list[dict[str, Any]]) -> int:
    """Sends in batches; returns how many were new (replayed message ids are duplicates)."""
    accepted = 0
    for start in range(0, len(events), 200):
        reply = client.post("/v1/batch", json={"batch": events[start : start + 200]}).raise_for_status()
        accepted += int(reply.json().get("accepted", 0))
    return accepted


def _await_entries(client: httpx.Client, journeys: list[str], seconds: float) -> bool:
    """Wait (at most `seconds`) until the journey worker has entered customers in each of `journeys`:
    it reads the stream in order, so it has then seen every customer of the history too."""
    deadline = time.monotonic() + seconds
    waiting = list(journeys)
    while waiting:
        waiting = [j for j in waiting if client.get(f"/v1/journeys/{j}/report").json().get("entered", 0) == 0]
        if not waiting:
            break
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)
    return True
