"""The CDNOW demo: real transactions (the 2,357-customer CDNOW sample) plus generated signals, for `make run`.

The 1997-98 purchases are moved in time so the last one falls a few days before today (so recency,
lifecycle stages and cohorts look current) and converted from US dollars to baht at a fixed rate. On top
of them, a deterministic subset of customers gets what a brand would also know: contact ids for the four
channels, consents, discounts on some orders, feedback, support tickets and app opens. Message ids are
derived from the original rows, so a re-load (even on another day) stores nothing new.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from retain_cli.demo import CATEGORIES, FIRST_NAMES

FILE_NAME = "cdnow_sample_2357cust.txt"
# A round 2026 rate: the sample's dollar amounts read as a Thai brand's baht amounts.
USD_TO_THB = 35.0
# The last purchase lands this many days before today.
DAYS_BEFORE_TODAY = 3
BATCH = 500
CONSENT_WORKERS = 6
SALES_CHANNELS = ("online", "app", "store")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Purchase:
    customer_id: str
    # Row identity in the original file: stable ids whatever the shift.
    source_day: str
    occurrence: int
    day: date
    quantity: int
    amount: float


def find_file(start: Path | None = None) -> Path | None:
    """<repo>/../shared/data/cdnow/<sample> when present (the repo is found from this file or `start`)."""
    roots = [start] if start else []
    roots.append(Path(__file__).resolve().parents[4])
    roots.append(Path.cwd())
    for root in roots:
        candidate = root.parent / "shared" / "data" / "cdnow" / FILE_NAME
        if candidate.is_file():
            return candidate
    return None


def customer_id(number: int) -> str:
    return f"cdnow-{number:05d}"


def read(lines: Iterable[str]) -> list[Purchase]:
    """The sample layout `master_id sample_id yyyymmdd cds dollars`, amounts in baht, original dates."""
    out: list[Purchase] = []
    seen: dict[tuple[str, str], int] = defaultdict(int)
    for number, raw in enumerate(lines, start=1):
        parts = raw.split()
        if not parts:
            continue
        if len(parts) != 5 or not parts[0].isdigit():
            raise ValueError(f"line {number}: expected `master_id sample_id yyyymmdd cds dollars`")
        user = customer_id(int(parts[0]))
        seen[(user, parts[2])] += 1
        out.append(Purchase(
            customer_id=user,
            source_day=parts[2],
            occurrence=seen[(user, parts[2])],
            day=datetime.strptime(parts[2], "%Y%m%d").date(),
            quantity=int(parts[3]),
            amount=round(float(parts[4]) * USD_TO_THB, 2),
        ))
    return out


def shift(purchases: Sequence[Purchase], *, today: date) -> list[Purchase]:
    """Moves every purchase by the same number of days so the last one is DAYS_BEFORE_TODAY before today."""
    if not purchases:
        return []
    delta = (today - timedelta(days=DAYS_BEFORE_TODAY)) - max(p.day for p in purchases)
    return [
        Purchase(p.customer_id, p.source_day, p.occurrence, p.day + delta, p.quantity, p.amount) for p in purchases
    ]


def _rng(key: str) -> random.Random:
    # Per-customer generators: a customer's signals do not depend on which others are loaded.
    return random.Random(int(hashlib.sha256(key.encode()).hexdigest()[:12], 16))


def _at(day: date, rng: random.Random) -> datetime:
    # Between 10:00 and 20:00 Bangkok time (UTC+7).
    return datetime(day.year, day.month, day.day, 3, tzinfo=UTC) + timedelta(minutes=rng.randrange(600))


@dataclass(frozen=True)
class Persona:
    """What the generated signals say about one customer."""

    contactable: bool
    phone: bool
    line: bool
    app: bool
    consents: tuple[str, ...]
    deal_hunter: bool
    feedback: bool
    unhappy: bool
    ticket: bool
    ticket_resolved: bool
    favourite: str
    first_name: str


def persona(user: str) -> Persona:
    rng = _rng(user)
    contactable = rng.random() < 0.5
    phone, line, app = rng.random() < 0.7, rng.random() < 0.5, rng.random() < 0.3
    channels = ("email",) + (("sms",) if phone else ()) + (("line",) if line else ()) + (("push",) if app else ())
    # PDPA: no consent unless given; some contactable customers never gave one.
    consents = channels if contactable and rng.random() < 0.85 else ()
    feedback = rng.random() < 0.25
    ticket = rng.random() < 0.08
    return Persona(
        contactable=contactable, phone=phone, line=line, app=app, consents=consents,
        deal_hunter=rng.random() < 0.12, feedback=feedback, unhappy=feedback and rng.random() < 0.2,
        ticket=ticket, ticket_resolved=rng.random() < 0.7, favourite=rng.choice(CATEGORIES),
        first_name=rng.choice(FIRST_NAMES),
    )


def _contacts(user: str, who: Persona) -> tuple[dict[str, Any], dict[str, Any]]:
    number = int(user.split("-")[1])
    digest = hashlib.sha256(user.encode()).hexdigest()
    traits: dict[str, Any] = {"first_name": who.first_name, "email": f"cdnow{number:05d}@example.co.th",
                              "locale": "th" if number % 3 else "en", "time_zone": "Asia/Bangkok"}
    context: dict[str, Any] = {}
    if who.phone:
        traits["phone"] = f"08{(number * 7919 + 10_000_000) % 100_000_000:08d}"
    if who.line:
        traits["line_user_id"] = "U" + digest[:32]
    if who.app:
        context["device"] = {"token": digest, "type": "android" if number % 2 else "ios"}
    return traits, context


def events(purchases: Sequence[Purchase], *, today: date) -> list[dict[str, Any]]:
    """Segment-shaped events: every purchase as an Order Completed, plus the generated signals."""
    by_customer: dict[str, list[Purchase]] = defaultdict(list)
    for p in purchases:
        by_customer[p.customer_id].append(p)
    out: list[dict[str, Any]] = []
    for user in sorted(by_customer):
        own = sorted(by_customer[user], key=lambda p: (p.day, p.occurrence))
        who = persona(user)
        rng = _rng(user + ":events")
        first_at = _at(own[0].day, rng) - timedelta(minutes=30)
        if who.contactable:
            traits, context = _contacts(user, who)
            out.append({"type": "identify", "userId": user, "messageId": f"{user}-identify",
                        "timestamp": first_at.isoformat(), "traits": traits, "context": context})
        for p in own:
            at = _at(p.day, rng)
            category = who.favourite if rng.random() < 0.6 else rng.choice(CATEGORIES)
            channel = "app" if who.app and rng.random() < 0.6 else rng.choice(SALES_CHANNELS)
            props: dict[str, Any] = {
                "order_id": f"{user}-{p.source_day}-{p.occurrence}", "revenue": p.amount, "currency": "THB",
                "quantity": p.quantity, "category": category, "channel": channel,
                "products": [{"product_id": f"sku-{category}-{p.quantity % 4}", "category": category,
                              "quantity": p.quantity, "price": p.amount}],
            }
            share = rng.uniform(0.15, 0.3) if who.deal_hunter else (0.1 if rng.random() < 0.15 else 0.0)
            if share and p.amount > 0:
                # The amount paid stays the revenue; the discount is what the list price would have added.
                props["discount"] = round(p.amount * share / (1 - share), 2)
                props["coupon"] = "DEAL" if who.deal_hunter else "WELCOME10"
            out.append({"type": "track", "event": "Order Completed", "userId": user,
                        "messageId": f"{user}-{p.source_day}-{p.occurrence}", "timestamp": at.isoformat(),
                        "properties": props})
        last = _at(own[-1].day, rng)
        if who.feedback:
            picks = own[-2:] if who.unhappy else rng.sample(own, min(len(own), rng.randint(1, 3)))
            for n, p in enumerate(picks):
                score = rng.randint(1, 2) if who.unhappy else rng.choice((3, 4, 4, 5, 5))
                out.append({"type": "track", "event": "Feedback Submitted", "userId": user,
                            "messageId": f"{user}-feedback-{n}",
                            "timestamp": (_at(p.day, rng) + timedelta(days=2)).isoformat(),
                            "properties": {"score": score, "sentiment": "negative" if score <= 2 else "positive"
                                           if score >= 4 else "neutral", "survey": "post-purchase"}})
        if who.ticket:
            opened = last + timedelta(days=1, hours=2)
            out.append({"type": "track", "event": "Ticket Opened", "userId": user, "messageId": f"{user}-ticket",
                        "timestamp": opened.isoformat(),
                        "properties": {"ticket_id": f"{user}-t1", "topic": rng.choice(("delivery", "refund",
                                                                                         "damaged item"))}})
            if who.ticket_resolved:
                out.append({"type": "track", "event": "Ticket Resolved", "userId": user,
                            "messageId": f"{user}-ticket-resolved",
                            "timestamp": (opened + timedelta(days=2)).isoformat(),
                            "properties": {"ticket_id": f"{user}-t1"}})
        if who.app:
            now = datetime(today.year, today.month, today.day, tzinfo=UTC)
            for n in range(rng.randint(1, 4)):
                at = min(last + timedelta(days=rng.randint(0, 60)), now - timedelta(hours=1 + n))
                out.append({"type": "track", "event": "App Opened", "userId": user,
                            "messageId": f"{user}-app-{n}", "timestamp": at.isoformat(),
                            "context": {"device": {"token": hashlib.sha256(user.encode()).hexdigest()}},
                            "properties": {}})
    return out


def consents(customer_ids: Iterable[str]) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for user in sorted(set(customer_ids)):
        given = persona(user).consents
        if given:
            out[user] = [{"channel": ch, "purpose": "marketing", "status": "granted", "source": "demo:cdnow-signup",
                          "lawful_basis": "consent", "policy_version": "2026-01"} for ch in given]
    return out


def last_customer(purchases: Sequence[Purchase]) -> str:
    """The customer loaded last (ids are sent in order): present means a previous load finished its events."""
    return max(p.customer_id for p in purchases)


@dataclass
class LoadReport:
    customers: int = 0
    orders: int = 0
    events: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    consents: int = 0
    seconds: float = 0.0


def load(
    client: httpx.Client, purchases: Sequence[Purchase], *, today: date, progress: Progress | None = None
) -> LoadReport:
    """Sends the (already shifted) purchases and generated signals through /v1/batch, then the consents."""
    started = time.monotonic()
    note = progress or (lambda _: None)
    sent = events(purchases, today=today)
    report = LoadReport(customers=len({p.customer_id for p in purchases}), orders=len(purchases), events=len(sent))
    for start in range(0, len(sent), BATCH):
        reply = client.post("/v1/batch", json={"batch": sent[start : start + BATCH]})
        reply.raise_for_status()
        body = reply.json()
        report.accepted += body["accepted"]
        report.duplicates += body["duplicates"]
        report.rejected += body["rejected"]
        note(f"CDNOW demo: {min(start + BATCH, len(sent)):,}/{len(sent):,} events")
    given = consents(p.customer_id for p in purchases)

    def put(user: str) -> None:
        client.put(f"/v1/customers/{user}/consents", json={"consents": given[user]}).raise_for_status()

    # One call per customer, each audited: a few in flight at once keeps this from dominating the load.
    with ThreadPoolExecutor(max_workers=CONSENT_WORKERS) as pool:
        for _ in pool.map(put, sorted(given)):
            report.consents += 1
    note(f"CDNOW demo: consents of {report.consents:,} customers")
    report.seconds = time.monotonic() - started
    return report


def train(purchases: Sequence[Purchase], *, workspace: str, bentoml_home: Path) -> list[Any]:
    """`retain train` on the loaded (shifted, baht) purchases, so the models see the data they will score."""
    from retain_scoring.data.cdnow import Transaction
    from retain_scoring.lifecycle import train_all
    from retain_scoring.store import ModelRegistry

    transactions = [Transaction(p.customer_id, p.day, p.amount) for p in purchases]
    return train_all(transactions, workspace=workspace, registry=ModelRegistry(bentoml_home),
                     source=f"demo:{FILE_NAME}")
