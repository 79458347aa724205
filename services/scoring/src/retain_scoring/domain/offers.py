"""Offer propensity: a Beta-Binomial posterior over accept rate, learned from logged outcomes."""

from __future__ import annotations

from dataclasses import dataclass


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
