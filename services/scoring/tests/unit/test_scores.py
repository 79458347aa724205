import numpy as np
import pytest
from retain_scoring.domain import btyd
from retain_scoring.domain.offers import BetaPrior, OfferCounts, propensity
from retain_scoring.domain.scores import (
    SCORE_COLUMNS,
    CustomerFeatures,
    ValuePolicy,
    check_features,
    feature_row,
    score_matrix,
)

BG = btyd.BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
GG = btyd.GammaGammaParams(p=6.25, q=3.74, gamma=15.44)
POLICY = ValuePolicy(clv_horizon_weeks=365 / 7, margin=0.3, annual_discount_rate=0.1)


def col(matrix: np.ndarray, name: str) -> np.ndarray:
    return matrix[:, SCORE_COLUMNS.index(name)]


def test_scores_are_consistent() -> None:
    rows = [[3, 30.0, 38.0, 40.0, 13.0], [3, 5.0, 38.0, 40.0, 13.0], [0, 0, 10.0, 0, 13.0]]
    m = score_matrix(BG, GG, rows, policy=POLICY)
    assert np.allclose(col(m, "churn_risk"), 1 - col(m, "p_alive"))
    assert col(m, "p_alive")[0] > col(m, "p_alive")[1]
    assert np.allclose(col(m, "expected_value"), col(m, "expected_purchases") * col(m, "expected_spend"))
    # Never-repeaters: alive by construction under BG/NBD, population mean spend, nothing at risk.
    assert col(m, "p_alive")[2] == 1.0 and col(m, "value_at_risk")[2] == 0.0
    assert col(m, "expected_spend")[2] == pytest.approx(GG.population_mean_spend)
    alive_value = btyd.expected_transactions_if_alive(BG, 365 / 7, 3, 5.0, 38.0) * col(m, "expected_spend")[1]
    assert col(m, "value_at_risk")[1] == pytest.approx(col(m, "churn_risk")[1] * alive_value)


@pytest.mark.parametrize("clv_horizon_weeks", [365 / 7, 10.0, 0.0])
def test_score_columns_match_the_btyd_functions(clv_horizon_weeks: float) -> None:
    """score_matrix shares its BG/NBD work across columns; each column still equals its own definition."""
    policy = ValuePolicy(clv_horizon_weeks=clv_horizon_weeks, margin=0.3, annual_discount_rate=0.1)
    rows = np.array([[3, 30.0, 38.0, 40.0, 13.0], [3, 5.0, 38.0, 40.0, 13.0], [0, 0, 10.0, 0, 4.0],
                     [2, 0, 6.0, 55.0, 52.0], [12, 60.0, 61.0, 80.0, 0.5], [1, 0.5, 0.5, 20.0, 13.0]])
    m = score_matrix(BG, GG, rows, policy=policy)
    x, t_x, age, _, horizon = rows.T
    spend = col(m, "expected_spend")
    assert np.allclose(col(m, "expected_purchases"), btyd.conditional_expected_transactions(BG, horizon, x, t_x, age),
                       rtol=1e-12, atol=0)
    lifetime = btyd.clv(BG, spend, x, t_x, age, horizon_weeks=clv_horizon_weeks, margin=0.3, annual_discount_rate=0.1)
    assert np.allclose(col(m, "clv"), lifetime, rtol=1e-12, atol=0)
    alive_value = btyd.expected_transactions_if_alive(BG, clv_horizon_weeks, x, t_x, age) * spend
    assert np.allclose(col(m, "value_at_risk"), col(m, "churn_risk") * alive_value, rtol=1e-12, atol=0)
    if clv_horizon_weeks == 0:
        assert np.all(col(m, "clv") == 0.0) and np.all(col(m, "value_at_risk") == 0.0)
    else:
        assert np.all(col(m, "clv") > 0)


def test_age_zero_still_scores() -> None:
    m = score_matrix(BG, GG, [[0, 0, 0, 0, 13.0]], policy=POLICY)
    assert np.all(np.isfinite(m)) and col(m, "expected_purchases")[0] > 0


def test_feature_row_ages_stale_features_and_treats_no_orders_as_new() -> None:
    f = CustomerFeatures(repeat_transactions=2, recency_weeks=4, age_weeks=10, average_order_value=30, orders=3,
                         as_of=1000.0)
    assert feature_row(f, now=1000.0 + 2 * 7 * 86400, horizon_weeks=5) == [2, 4, 12.0, 30, 5]
    none = CustomerFeatures(0, 0, 0, 0, orders=0, tenure_weeks=3)
    assert feature_row(none, now=0.0, horizon_weeks=5) == [0.0, 0.0, 3.0, 0.0, 5]


def test_check_features_names_the_bad_one() -> None:
    assert check_features(CustomerFeatures(1, 2, 3, 10, 2)) == ""
    assert check_features(CustomerFeatures(1, 5, 3, 10, 2)) == "recency_weeks"
    assert check_features(CustomerFeatures(1, 2, 3, float("nan"), 2)) == "average_order_value"
    assert check_features(CustomerFeatures(-1, 2, 3, 10, 2)) == "repeat_transactions"


def test_offer_propensity_is_beta_posterior_mean() -> None:
    prior = BetaPrior(1, 9)
    assert propensity(OfferCounts("o"), prior) == pytest.approx(0.1)
    assert propensity(OfferCounts("o", impressions=90, accepts=45), prior) == pytest.approx(46 / 100)
    # Accepts never exceed the times shown.
    assert propensity(OfferCounts("o", impressions=0, accepts=2), prior) == pytest.approx(3 / 12)
    with pytest.raises(ValueError):
        BetaPrior(0, 1)
