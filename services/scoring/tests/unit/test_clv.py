import numpy as np
import pytest
from retain_scoring.domain import btyd
from retain_scoring.domain.btyd import WEEKS_PER_MONTH, BgNbdParams
from scipy.special import hyp2f1

PUBLISHED = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
# Never-repeaters, repeat buyers with t_x = 0, one day old, recent and lapsed, heavy buyers.
X = np.array([0.0, 0.0, 2.0, 1.0, 3.0, 3.0, 12.0, 40.0])
T_X = np.array([0.0, 0.0, 0.0, 0.5, 35.0, 5.0, 60.0, 70.0])
AGE = np.array([1 / 7, 30.0, 10.0, 0.5, 38.0, 38.0, 61.0, 80.0])
SPEND = np.array([35.0, 12.5, 40.0, 60.0, 25.0, 25.0, 80.0, 18.0])


def reference_expected_transactions(params: BgNbdParams, t: float, x: float, t_x: float, T: float) -> float:
    """E[Y(t) | x, t_x, T] for one customer, FHL (2005) eq. 10 written out in scalars."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    later = alpha + T + t
    if_alive = (a + b + x - 1) / (a - 1) * (
        1 - ((alpha + T) / later) ** (r + x) * hyp2f1(r + x, b + x, a + b + x - 1, t / later)
    )
    odds = a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x) if x > 0 else 0.0
    return float(if_alive / (1 + odds))


def reference_clv(params: BgNbdParams, spend: float, x: float, t_x: float, T: float, *, horizon_weeks: float,
                  margin: float, annual_discount_rate: float) -> float:
    """Month by month: each month's expected transactions, discounted at its end (the last may be partial)."""
    monthly_rate = (1 + annual_discount_rate) ** (1 / 12) - 1
    total, before, month = 0.0, 0.0, 1
    while horizon_weeks > 0:
        end = min(month * WEEKS_PER_MONTH, horizon_weeks)
        cumulative = reference_expected_transactions(params, end, x, t_x, T)
        total += (cumulative - before) / (1 + monthly_rate) ** month
        if end >= horizon_weeks:
            break
        before, month = cumulative, month + 1
    return margin * spend * total


@pytest.mark.parametrize("horizon_weeks", [
    365 / 7,                 # a year: eleven months and a partial twelfth
    10.0,                    # two months and a bit
    2.0,                     # less than a month
    3 * WEEKS_PER_MONTH,     # exactly three months
    104.0,                   # two years, just short of the 24th month's end
])
@pytest.mark.parametrize("annual_discount_rate", [0.0, 0.1, 0.35])
def test_clv_matches_the_month_by_month_definition(horizon_weeks: float, annual_discount_rate: float) -> None:
    got = btyd.clv(PUBLISHED, SPEND, X, T_X, AGE, horizon_weeks=horizon_weeks, margin=0.3,
                   annual_discount_rate=annual_discount_rate)
    expected = [
        reference_clv(PUBLISHED, s, x, t_x, T, horizon_weeks=horizon_weeks, margin=0.3,
                      annual_discount_rate=annual_discount_rate)
        for s, x, t_x, T in zip(SPEND, X, T_X, AGE, strict=True)
    ]
    assert got.shape == X.shape
    assert np.all(got > 0)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=0)


def test_clv_of_one_customer_matches_the_same_customer_in_a_batch() -> None:
    together = btyd.clv(PUBLISHED, SPEND, X, T_X, AGE, horizon_weeks=365 / 7, margin=0.3, annual_discount_rate=0.1)
    for i in range(len(X)):
        alone = btyd.clv(PUBLISHED, SPEND[i : i + 1], X[i : i + 1], T_X[i : i + 1], AGE[i : i + 1],
                         horizon_weeks=365 / 7, margin=0.3, annual_discount_rate=0.1)
        assert alone.shape == (1,)
        assert alone[0] == pytest.approx(together[i], rel=1e-12)


@pytest.mark.parametrize("horizon_weeks", [0.0, -4.0])
def test_clv_without_a_horizon_is_zero(horizon_weeks: float) -> None:
    got = btyd.clv(PUBLISHED, SPEND, X, T_X, AGE, horizon_weeks=horizon_weeks, margin=0.3,
                   annual_discount_rate=0.1)
    assert got.shape == X.shape and np.all(got == 0.0)


def test_month_ends_close_each_month_and_the_horizon() -> None:
    assert np.allclose(btyd.month_ends(2.5 * WEEKS_PER_MONTH), [WEEKS_PER_MONTH, 2 * WEEKS_PER_MONTH,
                                                                 2.5 * WEEKS_PER_MONTH])
    assert list(btyd.month_ends(2.0)) == [2.0]
    assert list(btyd.month_ends(0.0)) == [0.0]
