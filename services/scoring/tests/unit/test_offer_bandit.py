"""Next-best-offer simulation: Thompson sampling over (offer, segment) posteriors vs an oracle and random."""

import numpy as np
import pytest
from retain_scoring.domain.offers import (
    BetaPrior,
    OfferCounts,
    SegmentedBandit,
    mean,
    prior_from_rate,
    segment_of,
    segment_posterior,
)

SEGMENTS = ["new:one_time", "active:repeat", "at_risk:repeat", "lapsed:one_time", "active:loyal", "churned:one_time"]
OFFERS = [f"offer_{i}" for i in range(5)]


def simulate(policy: str, *, decisions: int = 4000, seed: int = 7) -> tuple[float, float]:
    """Accept rate of `policy` and of the oracle over the last quarter of `decisions` (expected values)."""
    rng = np.random.default_rng(seed)
    # Hidden rates: each segment has a different best offer, so one global winner cannot do well.
    rates = rng.uniform(0.02, 0.12, (len(SEGMENTS), len(OFFERS)))
    for s in range(len(SEGMENTS)):
        rates[s, s % len(OFFERS)] = 0.25 + 0.03 * s
    bandit = SegmentedBandit({o: prior_from_rate(0.1) for o in OFFERS})
    got = oracle = 0.0
    for i in range(decisions):
        s = int(rng.integers(len(SEGMENTS)))
        offer = bandit.choose(SEGMENTS[s], rng) if policy == "thompson" else OFFERS[int(rng.integers(len(OFFERS)))]
        j = OFFERS.index(offer)
        bandit.record(offer, SEGMENTS[s], accepted=bool(rng.random() < rates[s, j]))
        if i >= decisions * 3 // 4:
            got += rates[s, j]
            oracle += rates[s].max()
    return got, oracle


def test_thompson_reaches_90_percent_of_oracle_and_random_does_not() -> None:
    got, oracle = simulate("thompson")
    random_got, random_oracle = simulate("random")
    assert got / oracle >= 0.9
    assert random_got / random_oracle < 0.9


def test_prior_from_rate_has_ten_pseudo_observations() -> None:
    prior = prior_from_rate(0.3)
    assert (prior.alpha, prior.beta) == pytest.approx((3.0, 7.0))
    with pytest.raises(ValueError):
        prior_from_rate(1.0)


def test_cold_segment_starts_from_the_offer_overall() -> None:
    prior = BetaPrior(1, 9)
    offer = OfferCounts("o", impressions=200, accepts=100)
    cold = segment_posterior(offer, OfferCounts("o"), prior)
    assert mean(cold) == pytest.approx(101 / 210)
    warm = segment_posterior(offer, OfferCounts("o", impressions=90, accepts=0), prior)
    assert mean(warm) < 0.1
    assert segment_of("at_risk", 3) == "at_risk:repeat" and segment_of("", 0) == "unknown:prospect"
