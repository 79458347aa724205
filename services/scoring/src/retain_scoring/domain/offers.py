"""Offer propensity: a Beta-Binomial posterior over accept rate, learned from logged outcomes."""

from __future__ import annotations

from dataclasses import astuple, dataclass, field

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class BetaPrior:
    alpha: float = 1.0
    beta: float = 9.0

    def __post_init__(self) -> None:
        if not (self.alpha > 0 and self.beta > 0):
            raise ValueError("prior alpha and beta must be positive")


@dataclass(frozen=True)
class OfferCounts:
    offer_id: str
    impressions: int = 0
    clicks: int = 0
    accepts: int = 0
    declines: int = 0


def propensity(counts: OfferCounts, prior: BetaPrior) -> float:
    """Posterior mean accept rate. Accepts beyond impressions (lost impression events) count as shown."""
    shown = max(counts.impressions, counts.accepts)
    return (prior.alpha + counts.accepts) / (prior.alpha + prior.beta + shown)


# A per-offer prior accept rate is worth this many observations: a few dozen outcomes outweigh it.
PRIOR_STRENGTH = 10.0
NO_SEGMENT = ""


def prior_from_rate(rate: float, *, strength: float = PRIOR_STRENGTH) -> BetaPrior:
    """Beta prior with mean `rate` worth `strength` pseudo-observations; rate must lie in (0, 1)."""
    if not 0.0 < rate < 1.0:
        raise ValueError("prior rate must lie strictly between 0 and 1")
    return BetaPrior(rate * strength, (1.0 - rate) * strength)


def value_tier(orders: float) -> str:
    """Purchase-count tiers: currency-free, so they mean the same in every workspace."""
    if orders <= 0:
        return "prospect"
    if orders < 2:
        return "one_time"
    return "repeat" if orders < 5 else "loyal"


def segment_of(lifecycle_stage: str, orders: float) -> str:
    """The segment offers learn per: lifecycle stage x value tier, e.g. `at_risk:repeat`."""
    return f"{lifecycle_stage or 'unknown'}:{value_tier(orders)}"


def posterior(counts: OfferCounts, prior: BetaPrior) -> BetaPrior:
    """Beta posterior over the accept rate. Accepts beyond impressions (lost impression events) count as shown."""
    shown = max(counts.impressions, counts.accepts)
    return BetaPrior(prior.alpha + counts.accepts, prior.beta + shown - counts.accepts)


def segment_posterior(offer: OfferCounts, segment: OfferCounts | None, prior: BetaPrior) -> BetaPrior:
    """The accept-rate posterior for one offer in one segment (None: no segment known).

    A segment starts from what the offer has shown across all segments, shrunk to PRIOR_STRENGTH
    observations, so a new segment is neither blind nor stuck on the offer's average.
    """
    overall = posterior(offer, prior)
    if segment is None:
        return overall
    mean = overall.alpha / (overall.alpha + overall.beta)
    return posterior(segment, prior_from_rate(mean, strength=PRIOR_STRENGTH))


def mean(beta: BetaPrior) -> float:
    return beta.alpha / (beta.alpha + beta.beta)


@dataclass
class SegmentedBandit:
    """Thompson sampling over (offer, segment) Beta posteriors, with per-offer priors.

    The same arithmetic as ScoreOffers/RecordOutcome, kept in memory: what the simulation test drives.
    """

    priors: dict[str, BetaPrior]
    counts: dict[tuple[str, str], OfferCounts] = field(default_factory=dict)

    def get(self, offer_id: str, segment: str) -> OfferCounts:
        return self.counts.get((offer_id, segment), OfferCounts(offer_id))

    def posterior(self, offer_id: str, segment: str) -> BetaPrior:
        return segment_posterior(self.get(offer_id, NO_SEGMENT), self.get(offer_id, segment),
                                 self.priors[offer_id])

    def choose(self, segment: str, rng: np.random.Generator) -> str:
        """The offer with the highest posterior draw: one Thompson-sampling step."""
        draws = {o: float(rng.beta(*astuple(self.posterior(o, segment)))) for o in self.priors}
        return max(draws, key=lambda o: draws[o])

    def record(self, offer_id: str, segment: str, *, accepted: bool) -> None:
        for key in (NO_SEGMENT, segment):
            c = self.get(offer_id, key)
            self.counts[(offer_id, key)] = OfferCounts(
                offer_id, impressions=c.impressions + 1, clicks=c.clicks, accepts=c.accepts + int(accepted),
                declines=c.declines + int(not accepted),
            )


# Column layouts of the BentoML `nbo` API: one row per (customer, offer) in, propensity and a draw out.
OFFER_INPUT_COLUMNS = ("impressions", "accepts", "segment_impressions", "segment_accepts", "prior_alpha",
                       "prior_beta")
OFFER_SCORE_COLUMNS = ("propensity", "thompson_sample")


def offer_matrix(rows: npt.ArrayLike, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Posterior mean and one Thompson draw per row, the arithmetic ScoreOffers applies to stored counts."""
    table = np.asarray(rows, dtype=np.float64).reshape(-1, len(OFFER_INPUT_COLUMNS))
    out = np.empty((len(table), len(OFFER_SCORE_COLUMNS)), dtype=np.float64)
    for i, (shown, accepted, seg_shown, seg_accepted, alpha, beta) in enumerate(table):
        overall = OfferCounts("", impressions=int(shown), accepts=int(accepted))
        segment = OfferCounts("", impressions=int(seg_shown), accepts=int(seg_accepted))
        post = segment_posterior(overall, segment, BetaPrior(alpha, beta))
        out[i] = (mean(post), rng.beta(post.alpha, post.beta))
    return out
