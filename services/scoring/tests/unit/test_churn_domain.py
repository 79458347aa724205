import numpy as np
import pytest
from retain_scoring.domain.btyd import BgNbdParams, probability_alive
from retain_scoring.domain.churn import classification_metrics, probability_no_purchase, snapshot_cutoffs

PARAMS = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)


def test_no_purchase_probability_shrinks_with_horizon_and_matches_simulation() -> None:
    x, t_x, T = np.array([2.0]), np.array([20.0]), np.array([30.0])
    short, long = (probability_no_purchase(PARAMS, np.array([h]), x, t_x, T)[0] for h in (4.0, 40.0))
    assert 1 - probability_alive(PARAMS, x, t_x, T)[0] < long < short < 1
    # Monte Carlo from the posterior: alive with P(alive), rate ~ Gamma(r + x, alpha + T) given alive.
    rng = np.random.default_rng(0)
    n = 200_000
    alive = rng.random(n) < probability_alive(PARAMS, x, t_x, T)[0]
    rate = rng.gamma(PARAMS.r + 2, 1 / (PARAMS.alpha + 30), n)
    silent = ~alive | (rng.poisson(rate * 40.0) == 0)
    assert long == pytest.approx(silent.mean(), abs=0.005)


def test_snapshots_end_their_windows_by_the_cutoff() -> None:
    plan = snapshot_cutoffs(0, 400, horizon_days=90, step_days=28)
    assert plan[0] == (400 - 112, 90)
    assert all(c + w <= 400 and w <= 90 for c, w in plan)
    assert all(c >= 28 for c, _ in plan)


def test_metrics() -> None:
    y = np.array([1, 1, 0, 0, 1, 0, 0, 0, 0, 0])
    perfect = classification_metrics(y, y.astype(float), y.astype(float))
    assert perfect["roc_auc"] == 1.0 and perfect["brier"] == 0.0 and perfect["base_rate"] == 0.3
    assert perfect["top_decile_lift"] == pytest.approx(1 / 0.3)
    inverted = classification_metrics(y, -y.astype(float), 1 - y.astype(float))
    assert inverted["roc_auc"] == 0.0 and inverted["brier"] == 1.0
