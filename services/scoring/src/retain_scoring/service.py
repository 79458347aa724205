"""Scoring use cases: customer scores through the BentoML service, offer propensities from outcome counts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from retain_kit.cache import TtlCache
from retain_kit.errors import InvalidArgument
from retain_kit.protoconv import utcnow
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from retain_scoring.bento_service import ScoringModels
from retain_scoring.domain.btyd import DAYS_PER_WEEK
from retain_scoring.domain.churn import input_row
from retain_scoring.domain.offers import (
    NO_SEGMENT,
    BetaPrior,
    OfferCounts,
    mean,
    prior_from_rate,
    segment_of,
    segment_posterior,
)
from retain_scoring.domain.scores import SCORE_COLUMNS, CustomerFeatures, check_features
from retain_scoring.ports import FeatureSource
from retain_scoring.repository import OfferOutcomeRepository
from retain_scoring.store import BtydModel, ChurnModel, ModelRef, ServingModels

MAX_CUSTOMERS = 5000
MAX_HORIZON_DAYS = 3650
MAX_OFFERS = 500
OFFER_MODEL = ModelRef("retain-offer-beta", "v1")
OUTCOMES = ("impression", "click", "accept", "decline")


@dataclass(frozen=True)
class CustomerRequest:
    customer_id: str
    features: CustomerFeatures | None


@dataclass(frozen=True)
class CustomerScore:
    customer_id: str
    values: dict[str, float]
    model: ModelRef
    # The model behind churn_risk and value_at_risk: the churn model when one is serving, else `model`.
    churn_model: ModelRef


@dataclass(frozen=True)
class OfferScore:
    counts: OfferCounts
    propensity: float
    # A Thompson draw from the same posterior (equal to `propensity` where no draw was asked for).
    sample: float = 0.0
    segment_counts: OfferCounts | None = None


class CustomerScorer:
    def __init__(
        self,
        models: ScoringModels,
        source: FeatureSource,
        *,
        default_horizon_days: int = 90,
        refresh_seconds: float | None = None,
    ) -> None:
        self.models = models
        if refresh_seconds is not None:
            models.refresh_seconds = refresh_seconds
        self.source = source
        self.default_horizon_days = default_horizon_days
        # workspace -> monotonic time of its latest score request: what scheduled retraining covers.
        self.requested: dict[str, float] = {}

    async def serving(self, workspace_id: str) -> ServingModels:
        """The workspace's models; one saved by `retain train` or `retain clv fit --save` serves within a minute."""
        cached = self.models.cached(workspace_id)
        return cached if cached is not None else await asyncio.to_thread(self.models.serving, workspace_id)

    def recent_workspaces(self, within_seconds: float) -> list[str]:
        since = time.monotonic() - within_seconds
        return sorted(w for w, at in self.requested.items() if at >= since)

    def stored_models(self) -> list[BtydModel]:
        """Every BTYD model in the store, newest first."""
        return self.models.registry.list_btyd()

    def stored_churn_models(self) -> list[ChurnModel]:
        return self.models.registry.list_churn()

    async def score(
        self, workspace_id: str, customers: Sequence[CustomerRequest], *, horizon_days: int
    ) -> tuple[list[CustomerScore], int, datetime]:
        if not workspace_id:
            raise InvalidArgument("workspace_id is required", field="workspace_id")
        if not customers:
            raise InvalidArgument("at least one customer is required", field="customers")
        if len(customers) > MAX_CUSTOMERS:
            raise InvalidArgument(f"at most {MAX_CUSTOMERS} customers per request", field="customers")
        if horizon_days < 0 or horizon_days > MAX_HORIZON_DAYS:
            raise InvalidArgument(f"horizon_days must be within 0..{MAX_HORIZON_DAYS}", field="horizon_days")
        horizon = horizon_days or self.default_horizon_days
        for i, customer in enumerate(customers):
            if not customer.customer_id:
                raise InvalidArgument("customer_id is required", field=f"customers[{i}].customer_id")
            if customer.features is not None and (bad := check_features(customer.features)):
                raise InvalidArgument(f"{bad} is not valid", field=f"customers[{i}].features.{bad}")
        resolved = await asyncio.gather(*(self._features(workspace_id, i, c) for i, c in enumerate(customers)))
        scored_at = utcnow()
        now = scored_at.timestamp()
        rows = np.array(
            [input_row(f, now=now, horizon_weeks=horizon / DAYS_PER_WEEK) for _, f in resolved],
            dtype=np.float64,
        )
        self.requested[workspace_id] = time.monotonic()
        models = await self.serving(workspace_id)
        matrix = self.models.score_with(rows, models)
        return scores_of([c for c, _ in resolved], matrix, models), horizon, scored_at

    async def _features(self, workspace_id: str, index: int, customer: CustomerRequest) -> tuple[str, CustomerFeatures]:
        if customer.features is not None:
            return customer.customer_id, customer.features
        customer_id, features = await self.source.features(
            workspace_id, customer.customer_id, field=f"customers[{index}].customer_id"
        )
        if bad := check_features(features):
            raise InvalidArgument(f"profile returned an invalid {bad}", field=f"customers[{index}].customer_id")
        return customer_id, features


def scores_of(customer_ids: Sequence[str], matrix: np.ndarray, models: ServingModels) -> list[CustomerScore]:
    """Score rows -> CustomerScores, each value tagged with the model that produced it."""
    btyd = models.btyd.ref
    churn = models.churn.ref if models.churn is not None else btyd
    return [
        CustomerScore(customer_id, dict(zip(SCORE_COLUMNS, map(float, matrix[i]), strict=True)), btyd, churn)
        for i, customer_id in enumerate(customer_ids)
    ]


def _check_offer_id(offer_id: str, field: str) -> None:
    if not offer_id or len(offer_id) > 64:
        raise InvalidArgument("offer_id must be 1-64 characters", field=field)


def offer_segment(features: CustomerFeatures | None) -> str:
    return NO_SEGMENT if features is None else segment_of(features.lifecycle_stage, features.orders)


@dataclass(frozen=True)
class _CountsSnapshot:
    offers: dict[str, OfferCounts]
    segments: dict[tuple[str, str], OfferCounts]


class OfferPropensities:
    """Accept-rate posteriors per (offer, segment) from logged outcomes, with Thompson draws to explore."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        prior: BetaPrior,
        rng: np.random.Generator | None = None,
        counts_cache_seconds: float = 0.0,
    ) -> None:
        self.sessions = sessions
        self.prior = prior
        self.rng = rng or np.random.default_rng()
        # Every decision asks for propensities; counts move slowly and a Thompson draw does not need the
        # last outcome of another replica. A recording here drops the workspace's snapshot at once.
        self._snapshots = TtlCache[_CountsSnapshot](counts_cache_seconds)
        self._recorded: dict[str, int] = {}

    async def _counts(self, workspace_id: str) -> _CountsSnapshot:
        if (cached := self._snapshots.get(workspace_id)) is not None:
            return cached
        generation = self._recorded.get(workspace_id, 0)
        async with self.sessions() as session:
            snapshot = _CountsSnapshot(*await OfferOutcomeRepository(session).workspace_counts(workspace_id))
        if self._recorded.get(workspace_id, 0) == generation:  # no outcome recorded while it loaded
            self._snapshots.put(workspace_id, snapshot)
        return snapshot

    async def score(
        self,
        workspace_id: str,
        offer_ids: Sequence[str],
        *,
        prior: BetaPrior | None = None,
        prior_rates: dict[str, float] | None = None,
        segment: str = NO_SEGMENT,
    ) -> list[OfferScore]:
        if not workspace_id:
            raise InvalidArgument("workspace_id is required", field="workspace_id")
        if not offer_ids:
            raise InvalidArgument("at least one offer id is required", field="offer_ids")
        if len(offer_ids) > MAX_OFFERS:
            raise InvalidArgument(f"at most {MAX_OFFERS} offers per request", field="offer_ids")
        for i, offer_id in enumerate(offer_ids):
            _check_offer_id(offer_id, f"offer_ids[{i}]")
        priors = {}
        for offer_id, rate in (prior_rates or {}).items():
            try:
                priors[offer_id] = prior_from_rate(rate)
            except ValueError as exc:
                raise InvalidArgument(str(exc), field=f"prior_propensity[{offer_id}]") from exc
        unique = list(dict.fromkeys(offer_ids))
        snapshot = await self._counts(workspace_id)
        used = prior or self.prior
        out = []
        for o in unique:
            counts = snapshot.offers.get(o) or OfferCounts(o)
            seg = (snapshot.segments.get((segment, o)) or OfferCounts(o)) if segment else None
            post = segment_posterior(counts, seg, priors.get(o, used))
            out.append(OfferScore(counts, mean(post), float(self.rng.beta(post.alpha, post.beta)), seg))
        return out

    async def record(
        self,
        workspace_id: str,
        *,
        offer_id: str,
        outcome: str,
        customer_id: str,
        decision_id: str,
        occurred_at: datetime | None,
        segment: str = NO_SEGMENT,
    ) -> tuple[OfferScore, bool]:
        """Counts one outcome; returns the offer's new counts and whether the outcome was a duplicate."""
        if not workspace_id:
            raise InvalidArgument("workspace_id is required", field="workspace_id")
        _check_offer_id(offer_id, "offer_id")
        if outcome not in OUTCOMES:
            raise InvalidArgument("outcome is required", field="outcome")
        if len(decision_id) > 64:
            raise InvalidArgument("decision_id is too long", field="decision_id")
        if len(segment) > 64:
            raise InvalidArgument("segment is too long", field="segment")
        duplicate = False
        async with self.sessions() as session:
            repo = OfferOutcomeRepository(session)
            try:
                deltas = await self._deltas(repo, workspace_id, offer_id=offer_id, outcome=outcome,
                                            decision_id=decision_id)
                await repo.add_event(workspace_id, decision_id=decision_id, offer_id=offer_id,
                                     customer_id=customer_id, outcome=outcome, occurred_at=occurred_at,
                                     segment=segment)
                await repo.increment(workspace_id, offer_id, deltas, segment=segment)
                await session.commit()
            except IntegrityError:
                # The same (decision, offer, outcome) was recorded, possibly by another replica just now.
                await session.rollback()
                duplicate = True
            counts = (await repo.counts(workspace_id, [offer_id]))[offer_id]
            seg = (await repo.segment_counts(workspace_id, [offer_id], segment))[offer_id] if segment else None
        self._recorded[workspace_id] = self._recorded.get(workspace_id, 0) + 1
        self._snapshots.forget(workspace_id)
        post = segment_posterior(counts, seg, self.prior)
        return OfferScore(counts, mean(post), mean(post), seg), duplicate

    @staticmethod
    async def _deltas(
        repo: OfferOutcomeRepository, workspace_id: str, *, offer_id: str, outcome: str, decision_id: str
    ) -> dict[str, int]:
        """Counter changes. An accept implies the offer was shown; never count that impression twice."""
        if outcome == "impression":
            implied = bool(decision_id) and await repo.has_event(
                workspace_id, decision_id=decision_id, offer_id=offer_id, outcome="accept"
            )
            return {"impressions": 0 if implied else 1}
        if outcome == "accept":
            if decision_id:
                shown = await repo.has_event(
                    workspace_id, decision_id=decision_id, offer_id=offer_id, outcome="impression"
                )
            else:
                current = (await repo.counts(workspace_id, [offer_id]))[offer_id]
                shown = current.impressions > current.accepts
            return {"accepts": 1, "impressions": 0 if shown else 1}
        return {"clicks": 1} if outcome == "click" else {"declines": 1}
