"""Churn training and evaluation from a transaction history, with point-in-time features.

Features come from the profile service's own feature code (`compute_features(events, as_of)`), so a
customer looks the same to the classifier in training as when profile serves their features live.
Nothing after a cut-off reaches the features, the BG/NBD fit or the labels of anything trained for it.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from retain_profile.domain.features import ORDER_EVENT, EventFact, compute_features
from retain_profile.domain.features import Features as ProfileFeatures

from retain_scoring.data.cdnow import Transaction
from retain_scoring.domain.btyd import DAYS_PER_WEEK, BgNbdParams, conditional_expected_transactions, fit_bgnbd
from retain_scoring.domain.churn import (
    INPUT_COLUMNS,
    MODEL_COLUMNS,
    churn_probability,
    classification_metrics,
    fit_classifier,
    input_row,
    model_matrix,
    probability_no_purchase,
    snapshot_cutoffs,
    stack,
)
from retain_scoring.domain.scores import CustomerFeatures

Array = npt.NDArray[np.float64]
Progress = Callable[[str], None]


def from_profile(features: ProfileFeatures) -> CustomerFeatures:
    """Profile's Features dataclass -> scoring's; the same mapping profile_client applies to the proto."""
    return CustomerFeatures(
        repeat_transactions=float(features.repeat_transactions),
        recency_weeks=features.recency_weeks,
        age_weeks=features.age_weeks,
        average_order_value=features.average_order_value,
        orders=float(features.frequency),
        tenure_weeks=features.tenure_days / DAYS_PER_WEEK,
        as_of=features.as_of.timestamp() if features.as_of else 0.0,
        recency_days=features.recency_days,
        monetary_total=features.monetary_total,
        orders_30d=float(features.orders_30d),
        spend_30d=features.spend_30d,
        orders_90d=float(features.orders_90d),
        spend_90d=features.spend_90d,
        activity_level=features.activity_level,
        negative_feedback_streak=float(features.negative_feedback_streak),
        open_tickets=float(features.open_tickets),
        lifecycle_stage=features.lifecycle_stage,
    )


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@dataclass(frozen=True)
class History:
    """Transactions grouped per customer: order events for the feature code, purchase days for labels."""

    events: dict[str, list[EventFact]]
    days: dict[str, list[date]]

    @classmethod
    def of(cls, transactions: Iterable[Transaction]) -> History:
        events: dict[str, list[EventFact]] = defaultdict(list)
        days: dict[str, set[date]] = defaultdict(set)
        for tx in transactions:
            events[tx.customer_id].append(
                EventFact(type="track", event=ORDER_EVENT, timestamp=midnight(tx.day),
                          properties={"revenue": tx.amount})
            )
            days[tx.customer_id].add(tx.day)
        if not events:
            raise ValueError("no transactions")
        return cls(dict(events), {c: sorted(d) for c, d in days.items()})

    def until(self, cutoff: date) -> History:
        """Only what was known at the end of `cutoff`."""
        events = {c: [e for e in evs if e.timestamp.date() <= cutoff] for c, evs in self.events.items()}
        days = {c: [d for d in ds if d <= cutoff] for c, ds in self.days.items()}
        return History({c: e for c, e in events.items() if e}, {c: d for c, d in days.items() if d})

    @property
    def first_day(self) -> date:
        return min(ds[0] for ds in self.days.values())

    @property
    def last_day(self) -> date:
        return max(ds[-1] for ds in self.days.values())

    def customers_at(self, cutoff: date) -> list[str]:
        return sorted((c for c, ds in self.days.items() if ds[0] <= cutoff), key=lambda c: (len(c), c))

    def features_at(self, customers: Sequence[str], cutoff: date) -> list[CustomerFeatures]:
        as_of = midnight(cutoff)
        return [from_profile(compute_features(self.events[c], as_of)) for c in customers]

    def churned(self, customers: Sequence[str], cutoff: date, horizon_days: int) -> Array:
        """1 where the customer made no purchase in (cutoff, cutoff + horizon]."""
        end = cutoff + timedelta(days=horizon_days)
        out = np.ones(len(customers), dtype=np.float64)
        for i, c in enumerate(customers):
            ds = self.days.get(c, [])
            j = bisect.bisect_right(ds, cutoff)
            if j < len(ds) and ds[j] <= end:
                out[i] = 0.0
        return out


@dataclass(frozen=True)
class Snapshot:
    """Everyone known at a cut-off: model inputs, BG/NBD's view, and (when known) the outcome."""

    cutoff: date
    horizon_days: int
    customers: list[str]
    inputs: Array
    bgnbd: BgNbdParams

    def matrix(self, bgnbd: BgNbdParams | None = None) -> Array:
        return model_matrix(self.inputs, bgnbd or self.bgnbd)


def snapshot(history: History, cutoff: date, *, horizon_days: int, bgnbd: BgNbdParams | None = None) -> Snapshot:
    """Features and a BG/NBD fit as of `cutoff`, from `history` truncated there (so nothing leaks)."""
    known = history.until(cutoff)
    customers = known.customers_at(cutoff)
    if not customers:
        raise ValueError(f"no customers by {cutoff.isoformat()}")
    features = known.features_at(customers, cutoff)
    now = midnight(cutoff).timestamp()
    inputs = np.array(
        [input_row(f, now=now, horizon_weeks=horizon_days / DAYS_PER_WEEK) for f in features], dtype=np.float64
    ).reshape(-1, len(INPUT_COLUMNS))
    if bgnbd is None:
        bgnbd = fit_bgnbd(inputs[:, 0], inputs[:, 1], np.maximum(inputs[:, 2], inputs[:, 1])).params
    return Snapshot(cutoff, horizon_days, customers, inputs, bgnbd)


@dataclass(frozen=True)
class ChurnFit:
    classifier: Any
    bgnbd: BgNbdParams
    horizon_days: int
    training_rows: int
    snapshots: list[tuple[date, int]]

    @property
    def calibrated(self) -> bool:
        return all(w == self.horizon_days for _, w in self.snapshots)


def train_churn(
    history: History, cutoff: date, *, horizon_days: int, seed: int = 0, progress: Progress | None = None
) -> ChurnFit:
    """Trains on snapshots before `cutoff` whose outcome windows end by `cutoff`; sees nothing later.

    The returned BG/NBD fit is the one at `cutoff` itself: serving computes BG/NBD columns with it.
    """
    if horizon_days <= 0:
        raise ValueError("horizon_days must be positive")
    known = history.until(cutoff)
    first, cut = known.first_day.toordinal(), cutoff.toordinal()
    plan = snapshot_cutoffs(first, cut, horizon_days=horizon_days)
    if not plan:
        raise ValueError("not enough history before the cutoff to train on")
    parts: list[Array] = []
    labels: list[Array] = []
    used: list[tuple[date, int]] = []
    for day, window in plan:
        at = date.fromordinal(day)
        if progress:
            progress(f"snapshot {at.isoformat()} (+{window}d)")
        snap = snapshot(known, at, horizon_days=window)
        matrix = snap.matrix()
        # An early snapshot of a small workspace can fit degenerate BG/NBD parameters whose expectations
        # overflow; those rows teach nothing, and the classifier refuses NaN.
        finite = np.isfinite(matrix).all(axis=1)
        parts.append(matrix[finite])
        labels.append(known.churned(snap.customers, at, window)[finite])
        used.append((at, window))
    features = stack(parts, len(MODEL_COLUMNS))
    y = np.concatenate(labels)
    if progress:
        progress(f"fitting on {len(y)} rows")
    classifier = fit_classifier(features, y, calibrate=all(w == horizon_days for _, w in used), seed=seed)
    final = snapshot(known, cutoff, horizon_days=horizon_days)
    return ChurnFit(classifier, final.bgnbd, horizon_days, len(y), used)


@dataclass(frozen=True)
class ChurnEvaluation:
    supervised: dict[str, float]
    bgnbd: dict[str, float]


def evaluate_churn(
    history: History,
    cutoff: date,
    *,
    horizon_days: int,
    classifier: Any,
    bgnbd: BgNbdParams,
) -> ChurnEvaluation:
    """Scores everyone at `cutoff` and compares with what happened in the following `horizon_days`.

    The baseline ranks by BG/NBD expected purchases (fewer = riskier) and takes its probabilities from
    BG/NBD's P(no purchase in the window), both with the BG/NBD fit the churn model carries.
    """
    snap = snapshot(history, cutoff, horizon_days=horizon_days, bgnbd=bgnbd)
    y = history.churned(snap.customers, cutoff, horizon_days)
    matrix = snap.matrix()
    probability = churn_probability(classifier, matrix)
    x, t_x, age = (matrix[:, MODEL_COLUMNS.index(c)] for c in ("x", "t_x", "T"))
    weeks = horizon_days / DAYS_PER_WEEK
    expected = conditional_expected_transactions(bgnbd, weeks, x, t_x, age)
    silent = probability_no_purchase(bgnbd, np.full_like(x, weeks), x, t_x, age)
    return ChurnEvaluation(
        supervised=classification_metrics(y, probability, probability),
        bgnbd=classification_metrics(y, -expected, silent),
    )
