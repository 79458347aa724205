"""Customer features as a pure function of a customer's events and a point in time.

`compute_features(events, as_of)` is the reference definition (scoring reuses it for point-in-time
training features). The live path folds each event into a `Summary`, an order-independent aggregate, and
evaluates `features_at(summary, as_of)` on read; folding is commutative, so events that arrive out of order
give exactly the features they would have given in order.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from retain_profile.domain.segments import SegmentDefinition, evaluate_custom, evaluate_segments

ORDER_EVENT = "Order Completed"
PRODUCT_VIEWED = "Product Viewed"
FEEDBACK_EVENT = "Feedback Submitted"
TICKET_OPENED = "Ticket Opened"
TICKET_RESOLVED = "Ticket Resolved"
SUBSCRIPTION_CANCELLED = "Subscription Cancelled"
NPS_EVENT = "NPS Survey Responded"
# NPS 0-10: detractors (<= 6) count as negative feedback, promoters (>= 9) as positive.
NPS_DETRACTOR_MAX = 6.0
NPS_PROMOTER_MIN = 9.0
# Message events emitted for channel deliveries; `properties.channel` names the channel.
MESSAGE_EVENTS = {"Message Delivered": "delivered", "Message Opened": "opened", "Message Clicked": "clicked"}
# Events kept as a count plus the time of the latest one.
COUNTED_EVENTS = {
    "Product Added": "product_added",
    "Checkout Started": "checkout_started",
    "Subscription Started": "subscription_started",
    SUBSCRIPTION_CANCELLED: "subscription_cancelled",
    NPS_EVENT: "nps",
    "Offer Accepted": "offer_accepted",
    "Offer Declined": "offer_declined",
}
# Identify and alias calls are bookkeeping, not customer activity.
ACTIVITY_TYPES = frozenset({"track", "page", "screen"})

ACTIVITY_WINDOW_DAYS = 28

DAY = timedelta(days=1)
WEEK = timedelta(days=7)


@dataclass(frozen=True)
class LifecycleThresholds:
    """Per-workspace lifecycle rules (days). A repeat buyer is at risk after `gap_multiplier` times their
    usual gap, but never sooner than `min_gap_days` (same-day reorders would otherwise make someone at
    risk the next morning)."""

    new_days: float = 30.0
    at_risk_days: float = 60.0
    lapsed_days: float = 120.0
    churned_days: float = 365.0
    min_gap_days: float = 7.0
    gap_multiplier: float = 2.0

    def problems(self) -> list[tuple[str, str]]:
        """(field, message) for every inconsistent value; empty when the thresholds are usable."""
        found = [(name, f"{name} must be positive") for name, value in asdict(self).items() if value <= 0]
        if found:
            return found
        if not self.at_risk_days < self.lapsed_days < self.churned_days:
            found.append(("at_risk_days", "at_risk_days < lapsed_days < churned_days must hold"))
        return found

    def to_json(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LifecycleThresholds:
        known = {k: float(v) for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


DEFAULT_THRESHOLDS = LifecycleThresholds()


@dataclass(frozen=True)
class ChannelEngagement:
    delivered: int = 0
    opened: int = 0
    clicked: int = 0
    last_delivered_at: datetime | None = None
    last_opened_at: datetime | None = None
    last_clicked_at: datetime | None = None

    @property
    def last_engaged_at(self) -> datetime | None:
        """The latest open or click (a delivery alone is not engagement)."""
        stamps = [t for t in (self.last_opened_at, self.last_clicked_at) if t is not None]
        return max(stamps) if stamps else None


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
    orders_365d: int = 0
    spend_365d: float = 0.0
    discount_total: float = 0.0
    # Discount given as a share of the list value of orders: discount / (revenue + discount).
    discount_share: float = 0.0
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
    channel_engagement: dict[str, ChannelEngagement] = field(default_factory=dict)
    products_added: int = 0
    last_product_added_at: datetime | None = None
    checkouts_started: int = 0
    last_checkout_started_at: datetime | None = None
    subscriptions_started: int = 0
    subscriptions_cancelled: int = 0
    subscription_active: bool = False
    nps_responses: int = 0
    nps_negative: int = 0
    last_nps_score: float = -1.0
    offers_accepted: int = 0
    offers_declined: int = 0


def order_discount(properties: Mapping[str, Any]) -> float:
    value = _number(properties.get("discount"))
    return abs(value) if value is not None else 0.0


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


def nps_sign(properties: Mapping[str, Any]) -> int:
    score = _number(properties.get("score"))
    if score is None:
        return 0
    if score <= NPS_DETRACTOR_MAX:
        return -1
    return 1 if score >= NPS_PROMOTER_MIN else 0


@dataclass
class Summary:
    """Order-independent aggregate of a customer's events; `add` commutes, so replay order is irrelevant."""

    events_count: int = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    activity: dict[str, int] = field(default_factory=dict)
    # (time, revenue, discount), sorted by time.
    orders: list[tuple[datetime, float, float]] = field(default_factory=list)
    categories: dict[str, float] = field(default_factory=dict)
    # Only the tail that can still matter: the newest positive feedback and everything after it.
    feedback: list[tuple[datetime, int]] = field(default_factory=list)
    tickets_opened: int = 0
    tickets_resolved: int = 0
    cancellations: list[datetime] = field(default_factory=list)
    # COUNTED_EVENTS key -> [count, latest time].
    counters: dict[str, tuple[int, datetime]] = field(default_factory=dict)
    # channel -> message status -> [count, latest time].
    channels: dict[str, dict[str, tuple[int, datetime]]] = field(default_factory=dict)
    negative_nps: int = 0
    # The latest NPS answer (time, score); the max by time, so folding order does not matter.
    last_nps: tuple[datetime, float] | None = None

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
        counted = COUNTED_EVENTS.get(fact.event)
        if counted is not None:
            self.counters[counted] = _bump(self.counters.get(counted), ts)
        if fact.event == ORDER_EVENT:
            bisect.insort(self.orders, (ts, order_revenue(props), order_discount(props)))
        elif fact.event in MESSAGE_EVENTS:
            channel = str(props.get("channel") or "").strip().lower()
            if channel:
                statuses = self.channels.setdefault(channel, {})
                status = MESSAGE_EVENTS[fact.event]
                statuses[status] = _bump(statuses.get(status), ts)
        elif fact.event == NPS_EVENT:
            sign = nps_sign(props)
            self.negative_nps += sign < 0
            score = _number(props.get("score"))
            if score is not None and (self.last_nps is None or (ts, score) > self.last_nps):
                self.last_nps = (ts, score)
            self._add_feedback(ts, sign)
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
            "orders": [[_iso(t), r, d] for t, r, d in self.orders],
            "categories": self.categories,
            "feedback": [[_iso(t), s] for t, s in self.feedback],
            "tickets_opened": self.tickets_opened,
            "tickets_resolved": self.tickets_resolved,
            "cancellations": [_iso(t) for t in self.cancellations],
            "counters": {k: [n, _iso(t)] for k, (n, t) in self.counters.items()},
            "channels": {c: {k: [n, _iso(t)] for k, (n, t) in s.items()} for c, s in self.channels.items()},
            "negative_nps": self.negative_nps,
            "last_nps": [_iso(self.last_nps[0]), self.last_nps[1]] if self.last_nps else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Summary:
        return cls(
            events_count=int(data.get("events_count", 0)),
            first_seen=_parse(data.get("first_seen")),
            last_seen=_parse(data.get("last_seen")),
            activity={str(k): int(v) for k, v in dict(data.get("activity", {})).items()},
            # Summaries written before discounts were tracked hold [time, revenue].
            orders=[(_req(o[0]), float(o[1]), float(o[2]) if len(o) > 2 else 0.0) for o in data.get("orders", [])],
            categories={str(k): float(v) for k, v in dict(data.get("categories", {})).items()},
            feedback=[(_req(t), int(s)) for t, s in data.get("feedback", [])],
            tickets_opened=int(data.get("tickets_opened", 0)),
            tickets_resolved=int(data.get("tickets_resolved", 0)),
            cancellations=[_req(t) for t in data.get("cancellations", [])],
            counters={str(k): (int(n), _req(t)) for k, (n, t) in dict(data.get("counters", {})).items()},
            channels={
                str(c): {str(k): (int(n), _req(t)) for k, (n, t) in dict(statuses).items()}
                for c, statuses in dict(data.get("channels", {})).items()
            },
            negative_nps=int(data.get("negative_nps", 0)),
            last_nps=(_req(nps[0]), float(nps[1])) if (nps := data.get("last_nps")) else None,
        )


def summarize(events: Iterable[EventFact]) -> Summary:
    summary = Summary()
    for fact in events:
        summary.add(fact)
    return summary


def compute_features(
    events: Iterable[EventFact],
    as_of: datetime,
    *,
    thresholds: LifecycleThresholds = DEFAULT_THRESHOLDS,
    segments: Sequence[SegmentDefinition] = (),
) -> Features:
    """Features as they stood at `as_of`: events after it are ignored (point-in-time correct)."""
    as_of = _utc(as_of)
    summary = summarize(e for e in events if _utc(e.timestamp) <= as_of)
    return features_at(summary, as_of, thresholds=thresholds, segments=segments)


def features_at(
    summary: Summary,
    as_of: datetime,
    *,
    thresholds: LifecycleThresholds = DEFAULT_THRESHOLDS,
    segments: Sequence[SegmentDefinition] = (),
) -> Features:
    """The one feature definition: the live path (stored summary) and training (compute_features) use it."""
    as_of = _utc(as_of)
    orders = summary.orders
    frequency = len(orders)
    monetary = sum(o[1] for o in orders)
    discount = sum(o[2] for o in orders)
    first_order = orders[0][0] if orders else None
    last_order = orders[-1][0] if orders else None
    reference = last_order or summary.last_seen
    recency = _days(as_of - reference) if reference else 0.0
    tenure = _days(as_of - summary.first_seen) if summary.first_seen else 0.0
    recent = _window(orders, as_of, 30)
    quarter = _window(orders, as_of, 90)
    year = _window(orders, as_of, 365)
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
    order_days = len({o[0].date() for o in orders})
    stage = lifecycle_stage(summary, as_of=as_of, tenure_days=tenure, thresholds=thresholds)
    counters = summary.counters
    started = counters.get("subscription_started")
    cancelled = counters.get("subscription_cancelled")
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
        orders_365d=year[0],
        spend_365d=year[1],
        discount_total=discount,
        discount_share=discount / (monetary + discount) if monetary + discount > 0 else 0.0,
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
        channel_engagement={c: _engagement(s) for c, s in sorted(summary.channels.items())},
        products_added=_count(counters, "product_added"),
        last_product_added_at=_latest(counters, "product_added"),
        checkouts_started=_count(counters, "checkout_started"),
        last_checkout_started_at=_latest(counters, "checkout_started"),
        subscriptions_started=_count(counters, "subscription_started"),
        subscriptions_cancelled=_count(counters, "subscription_cancelled"),
        subscription_active=started is not None and (cancelled is None or cancelled[1] < started[1]),
        nps_responses=_count(counters, "nps"),
        nps_negative=summary.negative_nps,
        last_nps_score=summary.last_nps[1] if summary.last_nps else -1.0,
        offers_accepted=_count(counters, "offer_accepted"),
        offers_declined=_count(counters, "offer_declined"),
    )
    names = tuple(evaluate_segments(features)) + tuple(evaluate_custom(features, segments))
    return replace(features, segments=names)


def lifecycle_stage(
    summary: Summary,
    *,
    as_of: datetime,
    tenure_days: float,
    thresholds: LifecycleThresholds = DEFAULT_THRESHOLDS,
) -> str:
    th = thresholds
    orders = summary.orders
    last_cancel = summary.cancellations[-1] if summary.cancellations else None
    if not orders:
        if last_cancel is not None:
            return "churned"
        if tenure_days < th.new_days:
            return "new"
        idle = _days(as_of - summary.last_seen) if summary.last_seen else tenure_days
        return _by_idle_days(idle, th) or "active"
    last_order = orders[-1][0]
    if last_cancel is not None and last_cancel >= last_order:
        return "churned"
    recency = _days(as_of - last_order)
    if recency > th.lapsed_days:
        return _by_idle_days(recency, th) or "lapsed"
    if _days(as_of - orders[0][0]) < th.new_days:
        return "new"
    if len(orders) >= 2:
        gap = _days(last_order - orders[0][0]) / (len(orders) - 1)
        if recency > max(th.gap_multiplier * gap, th.min_gap_days):
            return "at_risk"
    if recency > th.at_risk_days:
        return "at_risk"
    if len(orders) >= 2:
        previous = orders[-2][0]
        came_back = _days(last_order - previous) > th.lapsed_days
        cancelled_between = any(previous < c < last_order for c in summary.cancellations)
        if came_back or cancelled_between:
            return "reactivated"
    return "active"


def _by_idle_days(days: float, th: LifecycleThresholds) -> str | None:
    if days > th.churned_days:
        return "churned"
    if days > th.lapsed_days:
        return "lapsed"
    if days > th.at_risk_days:
        return "at_risk"
    return None


def _window(orders: list[tuple[datetime, float, float]], as_of: datetime, days: int) -> tuple[int, float]:
    start = as_of - timedelta(days=days)
    # Orders are sorted by time, so the window is a slice.
    lo = bisect.bisect_right(orders, start, key=lambda o: o[0])
    hi = bisect.bisect_right(orders, as_of, key=lambda o: o[0])
    return hi - lo, sum(o[1] for o in orders[lo:hi])


def _bump(current: tuple[int, datetime] | None, ts: datetime) -> tuple[int, datetime]:
    return (1, ts) if current is None else (current[0] + 1, max(current[1], ts))


def _count(counters: Mapping[str, tuple[int, datetime]], key: str) -> int:
    entry = counters.get(key)
    return entry[0] if entry else 0


def _latest(counters: Mapping[str, tuple[int, datetime]], key: str) -> datetime | None:
    entry = counters.get(key)
    return entry[1] if entry else None


def _engagement(statuses: Mapping[str, tuple[int, datetime]]) -> ChannelEngagement:
    return ChannelEngagement(
        delivered=_count(statuses, "delivered"),
        opened=_count(statuses, "opened"),
        clicked=_count(statuses, "clicked"),
        last_delivered_at=_latest(statuses, "delivered"),
        last_opened_at=_latest(statuses, "opened"),
        last_clicked_at=_latest(statuses, "clicked"),
    )


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
