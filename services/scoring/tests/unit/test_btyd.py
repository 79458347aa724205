from datetime import date
from pathlib import Path

import numpy as np
import pytest
from retain_scoring.data.cdnow import Summary, read_transactions, summarise
from retain_scoring.domain import btyd
from retain_scoring.domain.btyd import BgNbdParams, GammaGammaParams

REPO_ROOT = Path(__file__).resolve().parents[4]
CDNOW = REPO_ROOT / ".." / "shared" / "data" / "cdnow" / "cdnow_sample_2357cust.txt"
PUBLISHED = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
PUBLISHED_GG = GammaGammaParams(p=6.25, q=3.74, gamma=15.44)


def simulate_bgnbd(params: BgNbdParams, n: int, T: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draws customers from the BG/NBD story: Poisson buying, a coin flip after each purchase to drop out."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(params.r, 1.0 / params.alpha, n)
    p = rng.beta(params.a, params.b, n)
    x, t_x = np.zeros(n), np.zeros(n)
    for i in range(n):
        t = 0.0
        while True:
            t += rng.exponential(1.0 / lam[i])
            if t > T:
                break
            x[i] += 1
            t_x[i] = t
            if rng.random() < p[i]:
                break
    return x, t_x, np.full(n, T)


@pytest.fixture(scope="module")
def cdnow() -> Summary:
    if not CDNOW.exists():
        pytest.skip("shared CDNOW data not present")
    return summarise(
        read_transactions(CDNOW), calibration_end=date(1997, 9, 30), holdout_end=date(1998, 6, 30), cohort_weeks=12
    )


def test_cdnow_summary_matches_published_counts(cdnow: Summary) -> None:
    assert len(cdnow) == 2357
    assert int(cdnow.x.sum()) == 2457
    assert int((cdnow.x > 0).sum()) == 946
    assert cdnow.holdout_x is not None and int(cdnow.holdout_x.sum()) == 1882
    assert cdnow.holdout_weeks == 39.0 and cdnow.T.max() == pytest.approx(272 / 7)


def test_cdnow_bgnbd_fit_reproduces_fader_hardie_lee(cdnow: Summary) -> None:
    fit = btyd.fit_bgnbd(cdnow.x, cdnow.t_x, cdnow.T)
    for name, published in PUBLISHED.as_dict().items():
        assert getattr(fit.params, name) == pytest.approx(published, rel=0.005), name
    assert fit.log_likelihood == pytest.approx(-9582.4, abs=0.1)
    assert btyd.bgnbd_log_likelihood(PUBLISHED, cdnow.x, cdnow.t_x, cdnow.T) == pytest.approx(-9582.4, abs=0.1)


def test_cdnow_gamma_gamma_fit_reproduces_published(cdnow: Summary) -> None:
    fit = btyd.fit_gamma_gamma(cdnow.x, cdnow.monetary)
    assert fit.n == 946
    for name, published in PUBLISHED_GG.as_dict().items():
        assert getattr(fit.params, name) == pytest.approx(published, rel=0.005), name


def test_cdnow_unconditional_tracking_is_close_to_actual(cdnow: Summary) -> None:
    # FHL 2005 fig. 2: cumulative repeat transactions, 2,457 actual at week 39.
    predicted = btyd.expected_transactions(PUBLISHED, cdnow.T).sum()
    assert predicted == pytest.approx(2457, rel=0.03)


def test_fit_recovers_simulated_parameters() -> None:
    truth = BgNbdParams(r=0.8, alpha=6.0, a=0.6, b=2.5)
    x, t_x, T = simulate_bgnbd(truth, 6000, 52.0, seed=7)
    fit = btyd.fit_bgnbd(x, t_x, T)
    assert fit.params.r == pytest.approx(truth.r, rel=0.15)
    assert fit.params.alpha == pytest.approx(truth.alpha, rel=0.2)
    assert fit.params.a == pytest.approx(truth.a, rel=0.3)
    assert fit.params.b == pytest.approx(truth.b, rel=0.4)
    # The fitted model predicts the simulated totals.
    assert btyd.expected_transactions(fit.params, T).sum() == pytest.approx(x.sum(), rel=0.03)


def test_fit_rejects_bad_summaries() -> None:
    with pytest.raises(ValueError, match="^T"):
        btyd.fit_bgnbd([1, 2], [5, 6], [4, 10])
    with pytest.raises(ValueError, match="^x"):
        btyd.fit_bgnbd([-1], [0], [1])


def test_p_alive_properties() -> None:
    never = btyd.probability_alive(PUBLISHED, 0, 0, [1.0, 30.0, 300.0])
    assert np.allclose(never, 1.0)
    # Same history, longer silence since the last purchase: less likely alive.
    waiting = btyd.probability_alive(PUBLISHED, 3, 10.0, [10.0, 20.0, 40.0])
    assert waiting[0] > waiting[1] > waiting[2] > 0
    assert waiting[0] == pytest.approx(1.0 / (1.0 + PUBLISHED.a / (PUBLISHED.b + 2)))


def test_conditional_expectation_of_new_customer_equals_unconditional() -> None:
    t = np.array([1.0, 13.0, 52.0])
    assert np.allclose(btyd.conditional_expected_transactions(PUBLISHED, t, 0, 0, 0),
                       btyd.expected_transactions(PUBLISHED, t))
    grows = btyd.expected_transactions(PUBLISHED, t)
    assert np.all(np.diff(grows) > 0)


def test_conditional_expectation_matches_simulation() -> None:
    # Customers simulated for 78 weeks, summarised at week 39: mean repeat purchases in weeks 40-78 among
    # those with a given calibration history should match the conditional expectation on average.
    truth = BgNbdParams(r=0.5, alpha=4.0, a=0.8, b=2.5)
    rng = np.random.default_rng(3)
    n = 20000
    lam = rng.gamma(truth.r, 1.0 / truth.alpha, n)
    p = rng.beta(truth.a, truth.b, n)
    x, t_x, later = np.zeros(n), np.zeros(n), np.zeros(n)
    for i in range(n):
        t = 0.0
        while True:
            t += rng.exponential(1.0 / lam[i])
            if t > 78:
                break
            if t <= 39:
                x[i] += 1
                t_x[i] = t
            else:
                later[i] += 1
            if rng.random() < p[i]:
                break
    predicted = btyd.conditional_expected_transactions(truth, 39.0, x, t_x, np.full(n, 39.0))
    assert predicted.sum() == pytest.approx(later.sum(), rel=0.05)
    busy = x >= 3
    assert predicted[busy].sum() == pytest.approx(later[busy].sum(), rel=0.1)


def test_gamma_gamma_recovers_simulated_parameters_and_shrinks_spend() -> None:
    truth = GammaGammaParams(p=5.0, q=4.0, gamma=20.0)
    rng = np.random.default_rng(11)
    n = 4000
    x = rng.integers(1, 8, n).astype(float)
    nu = rng.gamma(truth.q, 1.0 / truth.gamma, n)
    means = np.array([rng.gamma(truth.p, 1.0 / v, int(k)).mean() for v, k in zip(nu, x, strict=True)])
    fit = btyd.fit_gamma_gamma(x, means)
    for name, value in truth.as_dict().items():
        assert getattr(fit.params, name) == pytest.approx(value, rel=0.2), name
    population = truth.population_mean_spend
    one, many = btyd.conditional_expected_spend(truth, [1, 50], [100.0, 100.0])
    assert population < one < many < 100.0


def test_clv_without_discount_is_margin_times_expected_value() -> None:
    spend = np.array([40.0, 25.0])
    x, t_x, T = np.array([2.0, 0.0]), np.array([20.0, 0.0]), np.array([30.0, 5.0])
    horizon = 52.0
    expected = btyd.conditional_expected_transactions(PUBLISHED, horizon, x, t_x, T) * spend
    flat = btyd.clv(PUBLISHED, spend, x, t_x, T, horizon_weeks=horizon, margin=0.25, annual_discount_rate=0.0)
    assert np.allclose(flat, 0.25 * expected)
    discounted = btyd.clv(PUBLISHED, spend, x, t_x, T, horizon_weeks=horizon, margin=0.25,
                          annual_discount_rate=0.2)
    assert np.all(discounted < flat) and np.all(discounted > 0.8 * flat)
