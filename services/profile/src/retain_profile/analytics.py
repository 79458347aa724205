"""Retention analytics as pure functions of customers (features + scores), orders and audit facts.

Everything here is deterministic arithmetic over the inputs, so every figure the API reports can be
recomputed from the data; the repository and servicer only gather the inputs and translate the results.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from retain_profile.domain.features import Features

LEAVER_STAGES = frozenset({"lapsed", "churned"})
STAYER_STAGES = frozenset({"new", "active", "reactivated"})
# Two negative feedbacks in a row is the service-recovery trigger of the brief.
NEGATIVE_STREAK = 2
# Features compared between stayers and leavers: behaviour before leaving, not recency (which defines leaving).
COMPARED_FEATURES = (
    "frequency", "average_order_value", "monetary_total", "discount_share", "negative_feedback_streak",
    "open_tickets", "nps_negative", "offers_declined", "tenure_days",
)
CONVERSION_EVENTS = ("Order Completed", "Offer Accepted")
SENT_OUTCOMES = frozenset({"sent", "delivered", "opened", "clicked"})
Z95 = 1.959963984540054

LEAK_DEFINITIONS = {
    "churned": "lifetime revenue of customers now churned",
    "value_at_risk": "churn risk x expected value (scoring) summed over customers not yet churned",
    "inactivity": "lifetime revenue of lapsed customers (no order for longer than the lapsed threshold)",
    "discount_dependence": "revenue in the window bought with a discount; customers = buyers with any discounted order",
    "discount_only": "lifetime revenue of customers whose every order carried a discount",
    "service_failures": "lifetime revenue of customers with an open ticket or a negative-feedback streak of 2+",
}


@dataclass(frozen=True)
class Order:
    customer_id: str
    at: datetime
    revenue: float
    discount: float = 0.0
    category: str = "unknown"
    channel: str = "unknown"


@dataclass(frozen=True)
class CustomerView:
    """One customer as analytics sees it: features at `as_of` and the scores for them."""

    customer_id: str
    features: Features
    churn_risk: float = 0.0
    expected_value: float = 0.0
    value_at_risk: float = 0.0


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime
    as_of: datetime

    def contains(self, at: datetime) -> bool:
        return self.since <= at < self.until


@dataclass
class Bucket:
    key: str
    customers: int = 0
    orders: int = 0
    revenue: float = 0.0
    discount: float = 0.0
    value_at_risk: float = 0.0


@dataclass(frozen=True)
class Leak:
    kind: str
    customers: int
    value: float
    definition: str


@dataclass
class MonthPoint:
    month: str
    revenue: float = 0.0
    orders: int = 0
    active_customers: int = 0
    new_customers: int = 0
    leavers: int = 0


@dataclass(frozen=True)
class ValueLeakage:
    customers: int
    buyers: int
    orders: int
    revenue: float
    discount: float
    value_at_risk: float
    expected_value: float
    breakdowns: dict[str, list[Bucket]]
    leakage: list[Leak]
    monthly: list[MonthPoint]


def month_key(at: datetime) -> str:
    return f"{at.year:04d}-{at.month:02d}"


def month_index(at: datetime) -> int:
    return at.year * 12 + at.month - 1


def _month_name(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def value_leakage(customers: Sequence[CustomerView], orders: Sequence[Order], window: Window) -> ValueLeakage:
    by_id = {c.customer_id: c for c in customers}
    in_window = [o for o in orders if window.contains(o.at) and o.customer_id in by_id]
    per_customer: dict[str, list[Order]] = defaultdict(list)
    for o in in_window:
        per_customer[o.customer_id].append(o)

    def customer_buckets(keys_of: Mapping[str, Iterable[str]]) -> list[Bucket]:
        buckets: dict[str, Bucket] = {}
        for c in customers:
            for key in keys_of[c.customer_id]:
                b = buckets.setdefault(key, Bucket(key))
                b.customers += 1
                b.value_at_risk += c.value_at_risk
                for o in per_customer.get(c.customer_id, ()):
                    b.orders += 1
                    b.revenue += o.revenue
                    b.discount += o.discount
        return _ranked(buckets)

    def order_buckets(key_of: str) -> list[Bucket]:
        buckets: dict[str, Bucket] = {}
        buyers: dict[str, set[str]] = defaultdict(set)
        for o in in_window:
            key = getattr(o, key_of)
            b = buckets.setdefault(key, Bucket(key))
            b.orders += 1
            b.revenue += o.revenue
            b.discount += o.discount
            buyers[key].add(o.customer_id)
        for key, ids in buyers.items():
            buckets[key].customers = len(ids)
        return _ranked(buckets)

    def cohort_of(c: CustomerView) -> list[str]:
        first = c.features.first_order_at
        return [month_key(first)] if first else ["no_order"]

    breakdowns = {
        "segment": customer_buckets({c.customer_id: c.features.segments or ("none",) for c in customers}),
        "lifecycle_stage": customer_buckets({c.customer_id: (c.features.lifecycle_stage,) for c in customers}),
        "cohort_month": customer_buckets({c.customer_id: cohort_of(c) for c in customers}),
        "category": order_buckets("category"),
        "channel": order_buckets("channel"),
    }
    return ValueLeakage(
        customers=len(customers),
        buyers=len(per_customer),
        orders=len(in_window),
        revenue=sum(o.revenue for o in in_window),
        discount=sum(o.discount for o in in_window),
        value_at_risk=sum(c.value_at_risk for c in customers if c.features.lifecycle_stage != "churned"),
        expected_value=sum(c.expected_value for c in customers),
        breakdowns=breakdowns,
        leakage=leaks(customers, orders, window),
        monthly=monthly(customers, orders, window),
    )


def leaks(customers: Sequence[CustomerView], orders: Sequence[Order], window: Window) -> list[Leak]:
    def leak(kind: str, group: Sequence[CustomerView]) -> Leak:
        return Leak(kind, len(group), sum(c.features.monetary_total for c in group), LEAK_DEFINITIONS[kind])

    stage = {c.customer_id: c.features.lifecycle_stage for c in customers}
    discounted = [o for o in orders if window.contains(o.at) and o.discount > 0 and o.customer_id in stage]
    all_orders: dict[str, list[Order]] = defaultdict(list)
    for o in orders:
        all_orders[o.customer_id].append(o)
    at_risk = [c for c in customers if c.features.lifecycle_stage != "churned" and c.value_at_risk > 0]
    return [
        leak("churned", [c for c in customers if c.features.lifecycle_stage == "churned"]),
        Leak("value_at_risk", len(at_risk), sum(c.value_at_risk for c in at_risk), LEAK_DEFINITIONS["value_at_risk"]),
        leak("inactivity", [c for c in customers if c.features.lifecycle_stage == "lapsed"]),
        Leak(
            "discount_dependence",
            len({o.customer_id for o in discounted}),
            sum(o.revenue for o in discounted),
            LEAK_DEFINITIONS["discount_dependence"],
        ),
        leak(
            "discount_only",
            [c for c in customers if all_orders.get(c.customer_id)
             and all(o.discount > 0 for o in all_orders[c.customer_id])],
        ),
        leak(
            "service_failures",
            [c for c in customers
             if c.features.open_tickets > 0 or c.features.negative_feedback_streak >= NEGATIVE_STREAK],
        ),
    ]


def monthly(customers: Sequence[CustomerView], orders: Sequence[Order], window: Window) -> list[MonthPoint]:
    known = {c.customer_id: c for c in customers}
    first = min((o.at for o in orders if window.contains(o.at)), default=None)
    if first is None:
        return []
    start, end = month_index(max(window.since, first)), month_index(window.until - timedelta(microseconds=1))
    points = {i: MonthPoint(_month_name(i)) for i in range(start, end + 1)}
    active: dict[int, set[str]] = defaultdict(set)
    for o in orders:
        i = month_index(o.at)
        if window.contains(o.at) and i in points and o.customer_id in known:
            points[i].revenue += o.revenue
            points[i].orders += 1
            active[i].add(o.customer_id)
    for i, ids in active.items():
        points[i].active_customers = len(ids)
    for c in customers:
        f = c.features
        if f.first_order_at and month_index(f.first_order_at) in points and window.contains(f.first_order_at):
            points[month_index(f.first_order_at)].new_customers += 1
        if f.last_order_at and f.lifecycle_stage in LEAVER_STAGES and month_index(f.last_order_at) in points:
            points[month_index(f.last_order_at)].leavers += 1
    return [points[i] for i in sorted(points)]


def _ranked(buckets: Mapping[str, Bucket]) -> list[Bucket]:
    return sorted(buckets.values(), key=lambda b: (-b.revenue, -b.value_at_risk, b.key))


# --- cohorts ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CohortStats:
    month: str
    customers: int
    retention: list[float]
    cumulative_revenue_per_customer: list[float]
    repeat_rate: float
    active_rate: float
    ltv_to_date: float
    predicted_ltv: float


def cohorts(
    customers: Sequence[CustomerView], orders: Sequence[Order], window: Window, *, months: int
) -> list[CohortStats]:
    """Cohorts by first-order month within the window; month k is reported only once it has begun."""
    acquired: dict[int, list[CustomerView]] = defaultdict(list)
    for c in customers:
        first = c.features.first_order_at
        if first is not None and window.contains(first):
            acquired[month_index(first)].append(c)
    per_customer: dict[str, list[Order]] = defaultdict(list)
    for o in orders:
        if o.at < window.until:
            per_customer[o.customer_id].append(o)
    last_month = month_index(window.until - timedelta(microseconds=1))
    out = []
    for start in sorted(acquired):
        group = acquired[start]
        span = min(months, last_month - start + 1)
        active = [set() for _ in range(span)]  # type: list[set[str]]
        revenue = [0.0] * span
        repeaters = 0
        ltv = 0.0
        for c in group:
            own = per_customer.get(c.customer_id, [])
            if len({o.at.date() for o in own}) >= 2:
                repeaters += 1
            ltv += sum(o.revenue for o in own)
            for o in own:
                k = month_index(o.at) - start
                if 0 <= k < span:
                    active[k].add(c.customer_id)
                    revenue[k] += o.revenue
        n = len(group)
        cumulative, running = [], 0.0
        for value in revenue:
            running += value
            cumulative.append(running / n)
        staying = sum(1 for c in group if c.features.lifecycle_stage not in LEAVER_STAGES)
        out.append(CohortStats(
            month=_month_name(start),
            customers=n,
            retention=[len(ids) / n for ids in active],
            cumulative_revenue_per_customer=cumulative,
            repeat_rate=repeaters / n,
            active_rate=staying / n,
            ltv_to_date=ltv / n,
            predicted_ltv=(ltv + sum(c.expected_value for c in group)) / n,
        ))
    return out


# --- priority segments -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    feature: str
    stayers_mean: float
    leavers_mean: float
    effect_size: float


@dataclass(frozen=True)
class SegmentPriority:
    segment: str
    customers: int
    value: float
    value_at_risk: float
    share_of_value: float
    share_of_value_at_risk: float
    stayers: int
    leavers: int
    comparison: list[Comparison]


def priority_segments(customers: Sequence[CustomerView]) -> list[SegmentPriority]:
    """Segments (built-in and custom, overlapping) ranked by value at risk, then value."""
    members: dict[str, list[CustomerView]] = defaultdict(list)
    for c in customers:
        for name in c.features.segments or ("none",):
            members[name].append(c)
    total_value = sum(c.features.monetary_total for c in customers)
    total_risk = sum(c.value_at_risk for c in customers)
    out = []
    for name, group in members.items():
        value = sum(c.features.monetary_total for c in group)
        risk = sum(c.value_at_risk for c in group)
        stayers = [c.features for c in group if c.features.lifecycle_stage in STAYER_STAGES]
        leavers = [c.features for c in group if c.features.lifecycle_stage in LEAVER_STAGES]
        out.append(SegmentPriority(
            segment=name,
            customers=len(group),
            value=value,
            value_at_risk=risk,
            share_of_value=value / total_value if total_value else 0.0,
            share_of_value_at_risk=risk / total_risk if total_risk else 0.0,
            stayers=len(stayers),
            leavers=len(leavers),
            comparison=compare(stayers, leavers),
        ))
    return sorted(out, key=lambda s: (-s.value_at_risk, -s.value, s.segment))


def compare(stayers: Sequence[Features], leavers: Sequence[Features]) -> list[Comparison]:
    """Mean of each feature per group and the standardised difference, largest first."""
    out = []
    for name in COMPARED_FEATURES:
        a = [float(getattr(f, name)) for f in stayers]
        b = [float(getattr(f, name)) for f in leavers]
        mean_a, mean_b = _mean(a), _mean(b)
        effect = 0.0
        if a and b:
            pooled = math.sqrt((_var(a) + _var(b)) / 2)
            effect = (mean_b - mean_a) / pooled if pooled > 0 else 0.0
        out.append(Comparison(name, mean_a, mean_b, effect))
    return sorted(out, key=lambda c: (-abs(c.effect_size), c.feature))


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _var(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    m = _mean(values)
    return sum((v - m) ** 2 for v in values) / (len(values) - 1)


# --- plays ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFact:
    """The fields of an audit record that play effectiveness needs."""

    seq: int
    kind: str
    outcome: str
    customer_id: str
    at: datetime
    offer_id: str = ""
    message_id: str = ""
    decision_id: str = ""
    channel: str = ""
    journey_id: str = ""
    payload: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Conversion:
    customer_id: str
    at: datetime
    event: str
    revenue: float = 0.0


@dataclass(frozen=True)
class PlayStats:
    offer_id: str
    journey_ids: list[str]
    decisions: int
    sends: int
    treated_customers: int
    conversions: int
    conversion_rate: float
    holdout_customers: int
    holdout_conversions: int
    holdout_rate: float
    has_holdout: bool
    lift: float
    lift_ci_low: float
    lift_ci_high: float
    offer_cost: float
    incentive_cost: float
    attributed_revenue: float
    value_saved: float
    incremental: bool
    suppressed: int


@dataclass(frozen=True)
class ChannelLoad:
    channel: str
    messages: int
    customers: int
    messages_per_customer: float
    failed: int
    suppressed: int
    engagement_rate: float


@dataclass(frozen=True)
class PlaysReport:
    plays: list[PlayStats]
    channels: list[ChannelLoad]
    models: list[tuple[str, str]]


def plays(
    records: Sequence[AuditFact],
    conversions: Sequence[Conversion],
    *,
    window: Window,
    conversion_days: int,
    engaged: Mapping[str, frozenset[str]] | None = None,
) -> PlaysReport:
    """Per offer: treated customers (sent a message) vs holdout customers (withheld by a holdout rule).

    A customer converts when an order or offer accept follows their first exposure within `conversion_days`;
    `engaged` maps channel -> customers who opened or clicked there (from profile's message events).
    """
    horizon = timedelta(days=conversion_days)
    by_customer: dict[str, list[Conversion]] = defaultdict(list)
    for conv in conversions:
        by_customer[conv.customer_id].append(conv)
    costs: dict[str, tuple[int, float]] = {}
    decisions: dict[str, set[str]] = defaultdict(set)
    sends: dict[str, dict[str, datetime]] = defaultdict(dict)
    send_customer: dict[str, str] = {}
    treated: dict[str, dict[str, datetime]] = defaultdict(dict)
    held: dict[str, dict[str, datetime]] = defaultdict(dict)
    suppressed: dict[str, int] = defaultdict(int)
    journeys: dict[str, set[str]] = defaultdict(set)
    channel_msgs: dict[str, set[str]] = defaultdict(set)
    channel_customers: dict[str, set[str]] = defaultdict(set)
    channel_failed: dict[str, set[str]] = defaultdict(set)
    channel_suppressed: dict[str, int] = defaultdict(int)
    models: set[tuple[str, str]] = set()

    def expose(target: dict[str, dict[str, datetime]], offer: str, customer: str, at: datetime) -> None:
        if customer and (customer not in target[offer] or at < target[offer][customer]):
            target[offer][customer] = at

    for r in sorted(records, key=lambda r: r.seq):
        if r.kind == "config":
            offer = r.payload.get("offer")
            if isinstance(offer, Mapping) and offer.get("offer_id"):
                costs[str(offer["offer_id"])] = (r.seq, _float(offer.get("cost")))
            continue
        if not window.contains(r.at):
            continue
        if r.kind == "decision" and r.outcome == "decided":
            if r.offer_id:
                decisions[r.offer_id].add(r.decision_id)
            for action in _dicts(r.payload.get("actions")):
                decisions[str(action.get("offer_id", ""))].add(r.decision_id)
            for model in _dicts(r.payload.get("models")):
                # Records written before 2026-11-23 say "name" (which audit sealed as personal data).
                models.add((str(model.get("model") or model.get("name", "")), str(model.get("version", ""))))
            for s in _dicts(r.payload.get("suppressed")):
                if s.get("rule") == "holdout" and s.get("offer_id"):
                    expose(held, str(s["offer_id"]), r.customer_id, r.at)
        elif r.kind == "message":
            if r.journey_id and r.offer_id:
                journeys[r.offer_id].add(r.journey_id)
            if r.outcome == "suppressed":
                suppressed[r.offer_id] += 1
                if r.channel:
                    channel_suppressed[r.channel] += 1
                if r.payload.get("rule") == "holdout" and r.offer_id:
                    expose(held, r.offer_id, r.customer_id, r.at)
            elif r.outcome in SENT_OUTCOMES and r.message_id:
                first = sends[r.offer_id].get(r.message_id)
                sends[r.offer_id][r.message_id] = r.at if first is None else min(first, r.at)
                send_customer[r.message_id] = r.customer_id
                expose(treated, r.offer_id, r.customer_id, r.at)
                if r.channel:
                    channel_msgs[r.channel].add(r.message_id)
                    channel_customers[r.channel].add(r.customer_id)
            elif r.outcome == "failed" and r.channel and r.message_id:
                channel_failed[r.channel].add(r.message_id)

    def converted(group: Mapping[str, datetime]) -> tuple[int, float]:
        count, revenue = 0, 0.0
        for customer, at in group.items():
            hits = [c for c in by_customer.get(customer, ()) if at < c.at <= at + horizon]
            if hits:
                count += 1
                revenue += sum(c.revenue for c in hits)
        return count, revenue

    out = []
    offers = sorted((set(sends) | set(held) | set(decisions) | set(suppressed)) - {""})
    for offer in offers:
        t, h = treated.get(offer, {}), held.get(offer, {})
        conv_t, rev_t = converted(t)
        conv_h, rev_h = converted(h)
        rate_t = conv_t / len(t) if t else 0.0
        rate_h = conv_h / len(h) if h else 0.0
        has_holdout = bool(t) and bool(h)
        lift = low = high = 0.0
        if has_holdout:
            lift = rate_t - rate_h
            se = math.sqrt(rate_t * (1 - rate_t) / len(t) + rate_h * (1 - rate_h) / len(h))
            low, high = lift - Z95 * se, lift + Z95 * se
        cost = costs.get(offer, (0, 0.0))[1]
        incentive = cost * conv_t
        incremental_revenue = rev_t - (rev_h / len(h)) * len(t) if has_holdout else rev_t
        out.append(PlayStats(
            offer_id=offer,
            journey_ids=sorted(journeys.get(offer, set())),
            decisions=len(decisions.get(offer, set())),
            sends=len(sends.get(offer, {})),
            treated_customers=len(t),
            conversions=conv_t,
            conversion_rate=rate_t,
            holdout_customers=len(h),
            holdout_conversions=conv_h,
            holdout_rate=rate_h,
            has_holdout=has_holdout,
            lift=lift,
            lift_ci_low=low,
            lift_ci_high=high,
            offer_cost=cost,
            incentive_cost=incentive,
            attributed_revenue=rev_t,
            value_saved=incremental_revenue - incentive,
            incremental=has_holdout,
            suppressed=suppressed.get(offer, 0),
        ))
    engaged = engaged or {}
    channels = []
    for name in sorted(set(channel_msgs) | set(channel_failed) | set(channel_suppressed)):
        reached = channel_customers.get(name, set())
        messages = len(channel_msgs.get(name, set()))
        channels.append(ChannelLoad(
            channel=name,
            messages=messages,
            customers=len(reached),
            messages_per_customer=messages / len(reached) if reached else 0.0,
            failed=len(channel_failed.get(name, set())),
            suppressed=channel_suppressed.get(name, 0),
            engagement_rate=len(reached & engaged.get(name, frozenset())) / len(reached) if reached else 0.0,
        ))
    return PlaysReport(out, channels, sorted(m for m in models if m[0]))


def _dicts(value: object) -> list[Mapping[str, object]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
