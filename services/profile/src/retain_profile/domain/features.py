"""Customer features as a pure function of a customer's events and a point in time.

`compute_features(events, as_of)` is the reference definition (scoring reuses it for point-in-time
training features). The live path folds each event into a `Summary`, an order-independent aggregate, and
evaluates `features_at(summary, as_of)` on read; folding is commutative, so events that arrive out of order
give exactly the features they would have given in order.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from retain_profile.domain.segments import evaluate_segments

ORDER_EVENT = "Order Completed"
PRODUCT_VIEWED = "Product Viewed"
FEEDBACK_EVENT = "Feedback Submitted"
TICKET_OPENED = "Ticket Opened"
TICKET_RESOLVED = "Ticket Resolved"
SUBSCRIPTION_CANCELLED = "Subscription Cancelled"
# Identify and alias calls are bookkeeping, not customer activity.
ACTIVITY_TYPES = frozenset({"track", "page", "screen"})

NEW_DAYS = 30
AT_RISK_DAYS = 60
LAPSED_DAYS = 120
CHURNED_DAYS = 365
# A repeat buyer is at risk after twice their usual gap, but never sooner than this (same-day reorders
# would otherwise make someone at risk the next morning).
MIN_GAP_DAYS = 7.0
ACTIVITY_WINDOW_DAYS = 28

DAY = timedelta(days=1)
WEEK = timedelta(days=7)


@dataclass(frozen=True)
class EventFact:
    """What features need from one stored event."""

    type: str
    event: str
    timestamp: datetime
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Features:
    recency_days: float = 0.0
    frequency: int = 0
    monetary_total: float = 0.0
    average_order_value: float = 0.0
    tenure_days: float = 0.0
    orders_30d: int = 0
    spend_30d: float = 0.0
    orders_90d: int = 0
    spend_90d: float = 0.0
    activity_level: float = 0.0
    activity_change: float = 0.0
    category_affinity: dict[str, float] = field(default_factory=dict)
    negative_feedback_streak: int = 0
    open_tickets: int = 0
    lifecycle_stage: str = "new"
    segments: tuple[str, ...] = ()
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    first_order_at: datetime | None = None
    last_order_at: datetime | None = None
    repeat_transactions: int = 0
    recency_weeks: float = 0.0
    age_weeks: float = 0.0
    as_of: datetime | None = None


def order_revenue(properties: Mapping[str, Any]) -> float:
    for key in ("revenue", "total"):
        value = _number(properties.get(key))
        if value is not None:
            return value
    return 0.0


def event_categories(event: str, properties: Mapping[str, Any]) -> list[str]:
    if event not in (PRODUCT_VIEWED, ORDER_EVENT):
        return []
    found = [properties.get("category")]
    products = properties.get("products")
    if isinstance(products, list):
        found.extend(p.get("category") for p in products if isinstance(p, Mapping))
    return [c.strip().lower() for c in found if isinstance(c, str) and c.strip()]


def feedback_sign(properties: Mapping[str, Any]) -> int:
    """-1 negative, +1 positive, 0 neutral (neutral neither extends nor resets a streak)."""
    score = _number(properties.get("score"))
    sentiment = str(properties.get("sentiment") or "").strip().lower()
    if (score is not None and score <= 2) or sentiment == "negative":
        return -1
    if (score is not None and score >= 4) or sentiment == "positive":
        return 1
    return 0


@dataclass
class Summary:
    """Order-independent aggregate of a customer's events; `add` commutes, so replay order is irrelevant."""

    events_count: int = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    activity: dict[str, int] = field(default_factory=dict)
    orders: list[tuple[datetime, float]] = field(default_factory=list)
    categories: dict[str, float] = field(default_factory=dict)
    # Only the tail that can still matter: the newest positive feedback and everything after it.
    feedback: list[tuple[datetime, int]] = field(default_factory=list)
    tickets_opened: int = 0
    tickets_resolved: int = 0
    cancellations: list[datetime] = field(default_factory=list)

    def add(self, fact: EventFact) -> None:
        ts = _utc(fact.timestamp)
        self.events_count += 1
        self.first_seen = ts if self.first_seen is None else min(self.first_seen, ts)
        self.last_seen = ts if self.last_seen is None else max(self.last_seen, ts)
        if fact.type in ACTIVITY_TYPES:
            key = ts.date().isoformat()
            self.activity[key] = self.activity.get(key, 0) + 1
        if fact.type != "track":
            return
        props = fact.properties
        for category in event_categories(fact.event, props):
            self.categories[category] = self.categories.get(category, 0.0) + 1.0
        if fact.event == ORDER_EVENT:
            bisect.insort(self.orders, (ts, order_revenue(props)))
        elif fact.event == FEEDBACK_EVENT:
            self._add_feedback(ts, feedback_sign(props))
        elif fact.event == TICKET_OPENED:
            self.tickets_opened += 1
        elif fact.event == TICKET_RESOLVED:
            self.tickets_resolved += 1
        elif fact.event == SUBSCRIPTION_CANCELLED:
            bisect.insort(self.cancellations, ts)

    def _add_feedback(self, ts: datetime, sign: int) -> None:
        if sign == 0:
            return
        if self.feedback and self.feedback[0][1] > 0 and ts < self.feedback[0][0]:
            return
        bisect.insort(self.feedback, (ts, sign))
        positives = [i for i, (_, s) in enumerate(self.feedback) if s > 0]
        if positives:
            del self.feedback[: positives[-1]]

    def to_json(self) -> dict[str, Any]:
        return {
            "events_count": self.events_count,
            "first_seen": _iso(self.first_seen),
            "last_seen": _iso(self.last_seen),
            "activity": self.activity,
            "orders": [[_iso(t), r] for t, r in self.orders],
            "categories": self.categories,
            "feedback": [[_iso(t), s] for t, s in self.feedback],
            "tickets_opened": self.tickets_opened,
            "tickets_resolved": self.tickets_resolved,
            "cancellations": [_iso(t) for t in self.cancellations],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Summary:
        return cls(
            events_count=int(data.get("events_count", 0)),
            first_seen=_parse(data.get("first_seen")),
            last_seen=_parse(data.get("last_seen")),
            activity={str(k): int(v) for k, v in dict(data.get("activity", {})).items()},
            orders=[(_req(t), float(r)) for t, r in data.get("orders", [])],
            categories={str(k): float(v) for k, v in dict(data.get("categories", {})).items()},
            feedback=[(_req(t), int(s)) for t, s in data.get("feedback", [])],
            tickets_opened=int(data.get("tickets_opened", 0)),
            tickets_resolved=int(data.get("tickets_resolved", 0)),
            cancellations=[_req(t) for t in data.get("cancellations", [])],
        )


def summarize(events: Iterable[EventFact]) -> Summary:
    summary = Summary()
    for fact in events:
        summary.add(fact)
    return summary


def compute_features(events: Iterable[EventFact], as_of: datetime) -> Features:
    """Features as they stood at `as_of`: events after it are ignored (point-in-time correct)."""
    as_of = _utc(as_of)
    return features_at(summarize(e for e in events if _utc(e.timestamp) <= as_of), as_of)


def features_at(summary: Summary, as_of: datetime) -> Features:
    as_of = _utc(as_of)
    orders = summary.orders
    frequency = len(orders)
    monetary = sum(r for _, r in orders)
    first_order = orders[0][0] if orders else None
    last_order = orders[-1][0] if orders else None
    reference = last_order or summary.last_seen
    recency = _days(as_of - reference) if reference else 0.0
    tenure = _days(as_of - summary.first_seen) if summary.first_seen else 0.0
    recent = _window(orders, as_of, 30)
    quarter = _window(orders, as_of, 90)
    current, previous = _activity(summary.activity, as_of.date())
    if previous:
        change = current / previous - 1.0
    else:
        # No baseline: any activity counts as full growth rather than an infinite ratio.
        change = 1.0 if current else 0.0
    total_weight = sum(summary.categories.values())
    affinity = {k: v / total_weight for k, v in sorted(summary.categories.items())} if total_weight else {}
    streak = 0
    for _, sign in reversed(summary.feedback):
        if sign > 0:
            break
        streak += 1
    order_days = len({t.date() for t, _ in orders})
    stage = lifecycle_stage(summary, as_of=as_of, tenure_days=tenure)
    features = Features(
        recency_days=recency,
        frequency=frequency,
        monetary_total=monetary,
        average_order_value=monetary / frequency if frequency else 0.0,
        tenure_days=tenure,
        orders_30d=recent[0],
        spend_30d=recent[1],
        orders_90d=quarter[0],
        spend_90d=quarter[1],
        activity_level=current / (ACTIVITY_WINDOW_DAYS / 7),
        activity_change=change,
        category_affinity=affinity,
        negative_feedback_streak=streak,
        open_tickets=max(0, summary.tickets_opened - summary.tickets_resolved),
        lifecycle_stage=stage,
        first_seen=summary.first_seen,
        last_seen=summary.last_seen,
        first_order_at=first_order,
        last_order_at=last_order,
        repeat_transactions=max(order_days - 1, 0),
        recency_weeks=(last_order - first_order) / WEEK if first_order and last_order else 0.0,
        age_weeks=(as_of - first_order) / WEEK if first_order else 0.0,
        as_of=as_of,
    )
    return _with_segments(features)


def lifecycle_stage(summary: Summary, *, as_of: datetime, tenure_days: float) -> str:
    orders = summary.orders
    last_cancel = summary.cancellations[-1] if summary.cancellations else None
    if not orders:
        if last_cancel is not None:
            return "churned"
        if tenure_days < NEW_DAYS:
            return "new"
        idle = _days(as_of - summary.last_seen) if summary.last_seen else tenure_days
        return _by_idle_days(idle) or "active"
    last_order = orders[-1][0]
    if last_cancel is not None and last_cancel >= last_order:
        return "churned"
    recency = _days(as_of - last_order)
    if recency > LAPSED_DAYS:
        return _by_idle_days(recency) or "lapsed"
    if _days(as_of - orders[0][0]) < NEW_DAYS:
        return "new"
    if len(orders) >= 2:
        gap = _days(last_order - orders[0][0]) / (len(orders) - 1)
        if recency > max(2 * gap, MIN_GAP_DAYS):
            return "at_risk"
    if recency > AT_RISK_DAYS:
        return "at_risk"
    if len(orders) >= 2:
        previous = orders[-2][0]
        came_back = _days(last_order - previous) > LAPSED_DAYS
        cancelled_between = any(previous < c < last_order for c in summary.cancellations)
        if came_back or cancelled_between:
            return "reactivated"
    return "active"


def _by_idle_days(days: float) -> str | None:
    if days > CHURNED_DAYS:
        return "churned"
    if days > LAPSED_DAYS:
        return "lapsed"
    if days > AT_RISK_DAYS:
        return "at_risk"
    return None


def _with_segments(features: Features) -> Features:
    return replace(features, segments=tuple(evaluate_segments(features)))


def _window(orders: list[tuple[datetime, float]], as_of: datetime, days: int) -> tuple[int, float]:
    start = as_of - timedelta(days=days)
    inside = [r for t, r in orders if start < t <= as_of]
    return len(inside), sum(inside)


def _activity(activity: Mapping[str, int], today: date) -> tuple[int, int]:
    current = previous = 0
    for key, count in activity.items():
        age = (today - date.fromisoformat(key)).days
        if 0 <= age < ACTIVITY_WINDOW_DAYS:
            current += count
        elif ACTIVITY_WINDOW_DAYS <= age < 2 * ACTIVITY_WINDOW_DAYS:
            previous += count
    return current, previous


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.replace(",", ""))
        except ValueError:
            return None
    return None


def _days(delta: timedelta) -> float:
    return delta / DAY


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _parse(value: Any) -> datetime | None:
    return _utc(datetime.fromisoformat(value)) if value else None


def _req(value: Any) -> datetime:
    return _utc(datetime.fromisoformat(str(value)))
