"""Customer scores from BTYD summaries: the arithmetic behind ScoreCustomers, vectorised over customers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from retain_scoring.domain.btyd import (
    DAYS_PER_WEEK,
    BgNbdParams,
    GammaGammaParams,
    conditional_expected_spend,
    discounted_margin,
    expected_transactions_if_alive,
    month_ends,
    probability_alive,
)

Array = npt.NDArray[np.float64]

# Column layout of the feature matrix the BentoML API takes (one row per customer).
FEATURE_COLUMNS = ("x", "t_x", "T", "monetary", "horizon_weeks")
# Column layout of the score matrix it returns.
SCORE_COLUMNS = ("p_alive", "churn_risk", "expected_purchases", "expected_spend", "expected_value", "clv",
                 "value_at_risk")
# A customer seen today has age 0, where BG/NBD is degenerate: score them as one day old.
MIN_AGE_WEEKS = 1.0 / DAYS_PER_WEEK


@dataclass(frozen=True)
class ValuePolicy:
    """How money is counted: CLV horizon, gross margin and the annual discount rate."""

    clv_horizon_weeks: float = 365.0 / DAYS_PER_WEEK
    margin: float = 0.3
    annual_discount_rate: float = 0.10


def score_matrix(
    bgnbd: BgNbdParams,
    gamma_gamma: GammaGammaParams,
    features: npt.ArrayLike,
    *,
    policy: ValuePolicy,
    churn: npt.ArrayLike | None = None,
) -> Array:
    """Scores per row of `features` (FEATURE_COLUMNS), returned as rows of SCORE_COLUMNS.

    Customers without repeat purchases or without spend history get the population mean spend; value at
    risk is churn risk times the revenue a still-active customer would bring over the CLV horizon. Churn
    risk is `churn` (a churn model's probabilities) when given, else 1 - P(alive).
    """
    table = np.asarray(features, dtype=np.float64).reshape(-1, len(FEATURE_COLUMNS))
    x, t_x, age, monetary, horizon = (table[:, i] for i in range(len(FEATURE_COLUMNS)))
    age = np.maximum(age, np.maximum(t_x, MIN_AGE_WEEKS))
    p_alive = probability_alive(bgnbd, x, t_x, age)
    # E[Y(t) | alive] for every horizon in one pass: each row's own, then each month end of the CLV horizon
    # (the last is the CLV horizon itself). Times P(alive) it is E[Y(t) | x, t_x, T].
    clv_ends = month_ends(policy.clv_horizon_weeks)
    horizons = np.vstack([horizon, np.broadcast_to(clv_ends[:, None], (len(clv_ends), len(x)))])
    if_alive = expected_transactions_if_alive(bgnbd, horizons, x, t_x, age)
    purchases = if_alive[0] * p_alive
    known = (x > 0) & (monetary > 0)
    spend = np.where(
        known,
        conditional_expected_spend(gamma_gamma, x, np.where(known, monetary, 1.0)),
        gamma_gamma.population_mean_spend,
    )
    value = purchases * spend
    lifetime = discounted_margin(if_alive[1:] * p_alive, spend, horizon_weeks=policy.clv_horizon_weeks,
                                 margin=policy.margin, annual_discount_rate=policy.annual_discount_rate)
    alive_value = if_alive[-1] * spend
    risk = 1.0 - p_alive if churn is None else np.asarray(churn, dtype=np.float64).reshape(-1)
    result: Array = np.column_stack([p_alive, risk, purchases, spend, value, lifetime, risk * alive_value])
    return result


@dataclass(frozen=True)
class CustomerFeatures:
    """The profile features scoring reads; BTYD time in weeks, `as_of` in seconds since the epoch (0: now).

    The fields after `as_of` feed the churn model only; training fills them from the profile's own feature
    code and serving from profile's Features message, so both paths see the same definitions.
    """

    repeat_transactions: float
    recency_weeks: float
    age_weeks: float
    average_order_value: float
    orders: float
    tenure_weeks: float = 0.0
    as_of: float = 0.0
    recency_days: float = 0.0
    monetary_total: float = 0.0
    orders_30d: float = 0.0
    spend_30d: float = 0.0
    orders_90d: float = 0.0
    spend_90d: float = 0.0
    activity_level: float = 0.0
    negative_feedback_streak: float = 0.0
    open_tickets: float = 0.0
    lifecycle_stage: str = ""


def check_features(features: CustomerFeatures) -> str:
    """Empty when usable; otherwise the name of the offending feature."""
    for name in ("repeat_transactions", "recency_weeks", "age_weeks", "average_order_value", "orders",
                 "tenure_weeks"):
        value = getattr(features, name)
        if not np.isfinite(value) or value < 0:
            return name
    if features.recency_weeks > features.age_weeks + 1e-9:
        return "recency_weeks"
    return ""


def feature_row(features: CustomerFeatures, *, now: float, horizon_weeks: float) -> list[float]:
    """One FEATURE_COLUMNS row. Without events since `as_of`, x and t_x stand still while the age grows."""
    elapsed = max(now - features.as_of, 0.0) / (86400.0 * DAYS_PER_WEEK) if features.as_of else 0.0
    if features.orders <= 0 and features.repeat_transactions <= 0:
        age = (features.age_weeks or features.tenure_weeks) + elapsed
        return [0.0, 0.0, age, 0.0, horizon_weeks]
    return [
        features.repeat_transactions,
        features.recency_weeks,
        features.age_weeks + elapsed,
        features.average_order_value,
        horizon_weeks,
    ]
