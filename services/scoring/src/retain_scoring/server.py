"""gRPC servicer: proto <-> domain translation only."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeAlias

import grpc
from retain.common.v1 import common_pb2
from retain.scoring.v1 import scoring_pb2, scoring_pb2_grpc
from retain_kit.errors import InvalidArgument, RetainError
from retain_kit.protoconv import from_timestamp, to_timestamp

from retain_scoring.domain.offers import BetaPrior
from retain_scoring.profile_client import features_from_proto
from retain_scoring.service import (
    OFFER_MODEL,
    CustomerRequest,
    CustomerScore,
    CustomerScorer,
    OfferPropensities,
    OfferScore,
    offer_segment,
)
from retain_scoring.store import ModelRef

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


def model_ref(ref: ModelRef) -> common_pb2.ModelRef:
    return common_pb2.ModelRef(name=ref.name, version=ref.version)


def outcome_name(value: scoring_pb2.Outcome.ValueType) -> str:
    return scoring_pb2.Outcome.Name(value).removeprefix("OUTCOME_").lower() if value else ""


def offer_to_proto(offer: OfferScore) -> scoring_pb2.OfferPropensity:
    ref = model_ref(OFFER_MODEL)
    seg = offer.segment_counts
    return scoring_pb2.OfferPropensity(
        offer_id=offer.counts.offer_id,
        propensity=scoring_pb2.Score(value=offer.propensity, model=ref),
        impressions=offer.counts.impressions,
        accepts=offer.counts.accepts,
        thompson_sample=scoring_pb2.Score(value=offer.sample, model=ref),
        segment_impressions=seg.impressions if seg else 0,
        segment_accepts=seg.accepts if seg else 0,
    )


def scores_to_proto(s: CustomerScore, horizon: int, scored_at: datetime) -> scoring_pb2.CustomerScores:
    ref = model_ref(s.model)
    churn_ref = model_ref(s.churn_model)
    v = s.values
    return scoring_pb2.CustomerScores(
        customer_id=s.customer_id,
        churn_risk=scoring_pb2.Score(value=v["churn_risk"], model=churn_ref),
        p_alive=scoring_pb2.Score(value=v["p_alive"], model=ref),
        expected_purchases=scoring_pb2.Score(value=v["expected_purchases"], model=ref),
        expected_value=scoring_pb2.Score(value=v["expected_value"], model=ref),
        clv=scoring_pb2.Score(value=v["clv"], model=ref),
        value_at_risk=scoring_pb2.Score(value=v["value_at_risk"], model=churn_ref),
        horizon_days=horizon,
        scored_at=to_timestamp(scored_at),
    )


class ScoringServicer(scoring_pb2_grpc.ScoringServiceServicer):
    def __init__(self, customers: CustomerScorer, offers: OfferPropensities) -> None:
        self.customers = customers
        self.offers = offers

    async def ScoreCustomers(
        self, request: scoring_pb2.ScoreCustomersRequest, context: Context
    ) -> scoring_pb2.ScoreCustomersResponse:
        inputs = [
            CustomerRequest(c.customer_id, features_from_proto(c.features) if c.HasField("features") else None)
            for c in request.customers
        ]
        scores, horizon, scored_at = await self.customers.score(
            request.workspace_id, inputs, horizon_days=request.horizon_days
        )
        return scoring_pb2.ScoreCustomersResponse(scores=[scores_to_proto(s, horizon, scored_at) for s in scores])

    async def ScoreOffers(
        self, request: scoring_pb2.ScoreOffersRequest, context: Context
    ) -> scoring_pb2.ScoreOffersResponse:
        prior = None
        if request.prior_alpha or request.prior_beta:
            for name in ("prior_alpha", "prior_beta"):
                if not getattr(request, name) > 0:
                    raise InvalidArgument(f"{name} must be positive when a prior is given", field=name)
            prior = BetaPrior(request.prior_alpha, request.prior_beta)
        features = features_from_proto(request.features) if request.HasField("features") else None
        segment = offer_segment(features)
        offers = await self.offers.score(
            request.workspace_id, list(request.offer_ids), prior=prior,
            prior_rates=dict(request.prior_propensity), segment=segment,
        )
        response = scoring_pb2.ScoreOffersResponse(
            customer_id=request.customer_id, offers=[offer_to_proto(o) for o in offers], segment=segment
        )
        if request.include_customer_scores:
            # One call for a decision: the customer's scores ride along. If they cannot be had (no model
            # yet, bad features), the propensities still stand and the reason says why.
            try:
                (score,), horizon, scored_at = await self.customers.score(
                    request.workspace_id, [CustomerRequest(request.customer_id, features)], horizon_days=0
                )
            except RetainError as exc:
                response.customer_scores_unavailable = exc.message
            else:
                response.customer_scores.CopyFrom(scores_to_proto(score, horizon, scored_at))
        return response

    async def RecordOutcome(
        self, request: scoring_pb2.RecordOutcomeRequest, context: Context
    ) -> scoring_pb2.RecordOutcomeResponse:
        offer, duplicate = await self.offers.record(
            request.workspace_id,
            offer_id=request.offer_id,
            outcome=outcome_name(request.outcome),
            customer_id=request.customer_id,
            decision_id=request.decision_id,
            occurred_at=from_timestamp(request.occurred_at) if request.HasField("occurred_at") else None,
            segment=request.segment,
        )
        return scoring_pb2.RecordOutcomeResponse(offer=offer_to_proto(offer), duplicate=duplicate)

    async def ListModels(
        self, request: scoring_pb2.ListModelsRequest, context: Context
    ) -> scoring_pb2.ListModelsResponse:
        models = [
            scoring_pb2.ModelInfo(
                model=model_ref(m.ref),
                kind="btyd",
                created_at=to_timestamp(m.created_at),
                parameters=m.parameters,
                metrics=m.metrics,
                source=m.source,
            )
            for m in self.customers.stored_models()
        ]
        models.extend(
            scoring_pb2.ModelInfo(
                model=model_ref(m.ref),
                kind="churn" if m.promoted else "churn:candidate",
                created_at=to_timestamp(m.created_at),
                parameters={**{f"bgnbd.{k}": v for k, v in m.bgnbd.as_dict().items()},
                            "horizon_days": float(m.horizon_days)},
                metrics=m.metrics,
                source=m.source,
            )
            for m in self.customers.stored_churn_models()
        )
        prior = self.offers.prior
        models.append(
            scoring_pb2.ModelInfo(
                model=model_ref(OFFER_MODEL),
                kind="beta_binomial",
                parameters={"prior_alpha": prior.alpha, "prior_beta": prior.beta},
                source="online:offer_outcomes",
            )
        )
        return scoring_pb2.ListModelsResponse(models=models)
