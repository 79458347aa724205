"""BG/NBD and Gamma-Gamma: likelihoods, maximum-likelihood fits and the quantities scoring needs.

References: Fader, Hardie & Lee (2005) "Counting Your Customers the Easy Way" (BG/NBD) and
Fader & Hardie (2013) "The Gamma-Gamma Model of Monetary Value". Time is in weeks throughout:
`x` repeat transactions, `t_x` time of the last repeat since the first purchase, `T` age since the
first purchase. Pure numpy/scipy; no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1

Array = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike

WEEKS_PER_MONTH = 365.25 / 12 / 7
DAYS_PER_WEEK = 7.0

P = TypeVar("P")


@dataclass(frozen=True)
class BgNbdParams:
    r: float
    alpha: float
    a: float
    b: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class GammaGammaParams:
    p: float
    q: float
    gamma: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    @property
    def population_mean_spend(self) -> float:
        """E[M] for a customer with no spend history; infinite when q <= 1."""
        return self.p * self.gamma / (self.q - 1.0) if self.q > 1.0 else float("inf")


@dataclass(frozen=True)
class Fit(Generic[P]):
    params: P
    log_likelihood: float
    n: int
    converged: bool


def _arrays(*values: ArrayLike) -> tuple[Array, ...]:
    """The values as float64 arrays of one shape; as they are when their shapes already agree (no broadcast)."""
    arrays = tuple(np.asarray(v, dtype=np.float64) for v in values)
    shape = arrays[0].shape
    if all(a.shape == shape for a in arrays):
        return arrays
    return tuple(np.broadcast_arrays(*arrays))


def check_rfm(x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> str:
    """Empty when the inputs are valid BTYD summaries; otherwise the name of the first bad input."""
    xs, txs, ts = _arrays(x, t_x, T)
    if not np.all(np.isfinite(xs)) or np.any(xs < 0):
        return "x"
    if not np.all(np.isfinite(txs)) or np.any(txs < 0):
        return "t_x"
    if not np.all(np.isfinite(ts)) or np.any(ts < txs):
        return "T"
    return ""


def bgnbd_log_likelihood_terms(params: BgNbdParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> Array:
    """Per-customer log-likelihood (FHL 2005, eq. 6)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    xs, txs, ts = _arrays(x, t_x, T)
    a1 = gammaln(r + xs) - gammaln(r) + r * np.log(alpha)
    a2 = betaln(a, b + xs) - betaln(a, b)
    a3 = -(r + xs) * np.log(alpha + ts)
    repeat = xs > 0
    # The second term exists only for repeat buyers; -inf keeps logaddexp exact for the others.
    with np.errstate(divide="ignore", invalid="ignore"):
        a4 = np.where(
            repeat,
            np.log(a) - np.log(np.where(repeat, b + xs - 1.0, 1.0)) - (r + xs) * np.log(alpha + txs),
            -np.inf,
        )
    result: Array = a1 + a2 + np.logaddexp(a3, a4)
    return result


def bgnbd_log_likelihood(
    params: BgNbdParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike, *, weights: ArrayLike | None = None
) -> float:
    terms = bgnbd_log_likelihood_terms(params, x, t_x, T)
    w = np.ones_like(terms) if weights is None else np.asarray(weights, dtype=np.float64)
    return float(np.sum(w * terms))


def _compress(*columns: Array) -> tuple[tuple[Array, ...], Array]:
    """Unique rows with their counts: many customers share (x, t_x, T), and the fit only needs one each."""
    stacked = np.column_stack(columns)
    unique, counts = np.unique(stacked, axis=0, return_counts=True)
    return tuple(unique[:, i] for i in range(unique.shape[1])), counts.astype(np.float64)


def _maximise(objective: Callable[[Array], float], start: Array) -> tuple[Array, float, bool]:
    """Minimise a negative log-likelihood over log-parameters: Nelder-Mead, then a quasi-Newton polish."""
    coarse = minimize(objective, start, method="Nelder-Mead", options={"maxiter": 4000, "xatol": 1e-8,
                                                                      "fatol": 1e-10})
    fine = minimize(objective, coarse.x, method="BFGS", options={"gtol": 1e-7})
    best = fine if np.isfinite(fine.fun) and fine.fun <= coarse.fun else coarse
    return np.asarray(best.x, dtype=np.float64), float(best.fun), bool(coarse.success or fine.success)


def fit_bgnbd(x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> Fit[BgNbdParams]:
    """Maximum-likelihood BG/NBD fit; raises ValueError naming the bad input."""
    xs, txs, ts = _arrays(x, t_x, T)
    if xs.size == 0:
        raise ValueError("x: no customers to fit")
    bad = check_rfm(xs, txs, ts)
    if bad:
        raise ValueError(f"{bad}: invalid BTYD summary")
    (ux, utx, uT), counts = _compress(xs, txs, ts)

    def negative(log_params: Array) -> float:
        r, alpha, a, b = np.exp(np.clip(log_params, -30.0, 30.0))
        value = bgnbd_log_likelihood(BgNbdParams(r, alpha, a, b), ux, utx, uT, weights=counts)
        return -value if np.isfinite(value) else 1e300

    start = np.log(np.array([0.5, max(float(np.mean(ts)), 1.0), 1.0, 1.0]))
    best, fun, converged = _maximise(negative, start)
    r, alpha, a, b = (float(v) for v in np.exp(best))
    return Fit(BgNbdParams(r, alpha, a, b), -fun, int(xs.size), converged)


def expected_transactions(params: BgNbdParams, t: ArrayLike) -> Array:
    """E[X(t)]: expected transactions in (0, t] for a customer just acquired (FHL 2005, eq. 7)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    ts = np.asarray(t, dtype=np.float64)
    hyp = hyp2f1(r, b, a + b - 1.0, ts / (alpha + ts))
    result: Array = (a + b - 1.0) / (a - 1.0) * (1.0 - (alpha / (alpha + ts)) ** r * hyp)
    return result


def _dropout_odds(params: BgNbdParams, xs: Array, txs: Array, ts: Array) -> Array:
    """a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x) for repeat buyers, 0 otherwise (never-repeaters cannot drop)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    repeat = xs > 0
    safe = np.where(repeat, b + xs - 1.0, 1.0)
    log_odds = np.log(a) - np.log(safe) + (r + xs) * (np.log(alpha + ts) - np.log(alpha + txs))
    result: Array = np.where(repeat, np.exp(np.minimum(log_odds, 700.0)), 0.0)
    return result


def _alive(params: BgNbdParams, xs: Array, txs: Array, ts: Array) -> Array:
    result: Array = 1.0 / (1.0 + _dropout_odds(params, xs, txs, ts))
    return result


def probability_alive(params: BgNbdParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> Array:
    """P(alive | x, t_x, T) (FHL 2005, eq. 11)."""
    return _alive(params, *_arrays(x, t_x, T))


def _if_alive(params: BgNbdParams, hs: Array, xs: Array, ts: Array) -> Array:
    """E[Y(t) | alive] for arrays that broadcast together: hs may run over horizons while xs, ts run over customers."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    rx, aged = r + xs, alpha + ts
    later = aged + hs
    hyp = hyp2f1(rx, b + xs, a + b + xs - 1.0, hs / later)
    ratio = np.exp(rx * (np.log(aged) - np.log(later)))
    result: Array = (a + b + xs - 1.0) / (a - 1.0) * (1.0 - ratio * hyp)
    return result


def expected_transactions_if_alive(
    params: BgNbdParams, t: ArrayLike, x: ArrayLike, t_x: ArrayLike, T: ArrayLike
) -> Array:
    """E[Y(t) | alive, x, t_x, T]: expected transactions in (T, T+t] for a customer still active."""
    hs, xs, _, ts = _arrays(t, x, t_x, T)
    return _if_alive(params, hs, xs, ts)


def conditional_expected_transactions(
    params: BgNbdParams, t: ArrayLike, x: ArrayLike, t_x: ArrayLike, T: ArrayLike
) -> Array:
    """E[Y(t) | x, t_x, T]: expected transactions in (T, T+t] (FHL 2005, eq. 10)."""
    hs, xs, txs, ts = _arrays(t, x, t_x, T)
    result: Array = _if_alive(params, hs, xs, ts) * _alive(params, xs, txs, ts)
    return result


def gamma_gamma_log_likelihood_terms(params: GammaGammaParams, x: ArrayLike, m: ArrayLike) -> Array:
    """Per-customer log-likelihood of the mean spend m over x transactions (x > 0, m > 0)."""
    p, q, g = params.p, params.q, params.gamma
    xs, ms = _arrays(x, m)
    px = p * xs
    result: Array = (
        gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(g)
        + (px - 1.0) * np.log(ms) + px * np.log(xs) - (px + q) * np.log(g + ms * xs)
    )
    return result


def gamma_gamma_log_likelihood(params: GammaGammaParams, x: ArrayLike, m: ArrayLike) -> float:
    return float(np.sum(gamma_gamma_log_likelihood_terms(params, x, m)))


def fit_gamma_gamma(x: ArrayLike, m: ArrayLike) -> Fit[GammaGammaParams]:
    """Maximum-likelihood Gamma-Gamma fit on repeat buyers (x > 0, mean spend m > 0)."""
    xs, ms = _arrays(x, m)
    keep = (xs > 0) & (ms > 0)
    xs, ms = xs[keep], ms[keep]
    if xs.size < 2:
        raise ValueError("monetary: need at least two repeat buyers with positive spend")
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ms))):
        raise ValueError("monetary: non-finite values")

    def negative(log_params: Array) -> float:
        p, q, g = np.exp(np.clip(log_params, -30.0, 30.0))
        value = gamma_gamma_log_likelihood(GammaGammaParams(p, q, g), xs, ms)
        return -value if np.isfinite(value) else 1e300

    start = np.log(np.array([1.0, 2.0, max(float(np.mean(ms)), 1.0)]))
    best, fun, converged = _maximise(negative, start)
    p, q, g = (float(v) for v in np.exp(best))
    return Fit(GammaGammaParams(p, q, g), -fun, int(xs.size), converged)


def conditional_expected_spend(params: GammaGammaParams, x: ArrayLike, m: ArrayLike) -> Array:
    """E[M | x, m]: a weighted mean of the population mean and the customer's own mean spend."""
    p, q, g = params.p, params.q, params.gamma
    xs, ms = _arrays(x, m)
    result: Array = p * (g + xs * ms) / (p * xs + q - 1.0)
    return result


def month_ends(horizon_weeks: float) -> Array:
    """The end of each month within (0, horizon], in weeks; the last is the horizon itself (a partial month).

    A horizon <= 0 has no months and is returned alone.
    """
    result: Array = np.append(np.arange(0.0, horizon_weeks, WEEKS_PER_MONTH)[1:], horizon_weeks)
    return result


def discounted_margin(
    cumulative: Array, spend: Array, *, horizon_weeks: float, margin: float, annual_discount_rate: float
) -> Array:
    """margin x spend x each month's expected transactions, discounted at the end of that month; 0 without a horizon.

    `cumulative` holds E[Y(t) | x, t_x, T] at `month_ends(horizon_weeks)` down its first axis.
    """
    if horizon_weeks <= 0:
        return np.zeros_like(spend)
    per_month = np.diff(cumulative, axis=0, prepend=0.0)
    rate = monthly_discount_rate(annual_discount_rate)
    discount = (1.0 + rate) ** -np.arange(1, len(cumulative) + 1, dtype=np.float64)
    by_month = discount.reshape((-1,) + (1,) * (cumulative.ndim - 1)) * per_month
    result: Array = margin * spend * by_month.sum(axis=0)
    return result


def monthly_discount_rate(annual_rate: float) -> float:
    return float((1.0 + annual_rate) ** (1.0 / 12.0) - 1.0)


def clv(
    bgnbd: BgNbdParams,
    spend: ArrayLike,
    x: ArrayLike,
    t_x: ArrayLike,
    T: ArrayLike,
    *,
    horizon_weeks: float,
    margin: float,
    annual_discount_rate: float,
) -> Array:
    """Discounted margin over the horizon: expected transactions per month x expected spend x margin.

    Each month's transactions are discounted at the end of that month; a partial last month is
    discounted as a full one.
    """
    spends, xs, txs, ts = _arrays(spend, x, t_x, T)
    if horizon_weeks <= 0:
        return np.zeros_like(xs)
    # E[Y(t) | x, t_x, T] at every month end in one pass: months down the first axis, customers after it.
    ends = month_ends(horizon_weeks).reshape((-1,) + (1,) * xs.ndim)
    cumulative = _if_alive(bgnbd, ends, xs, ts) * _alive(bgnbd, xs, txs, ts)
    return discounted_margin(cumulative, spends, horizon_weeks=horizon_weeks, margin=margin,
                             annual_discount_rate=annual_discount_rate)
