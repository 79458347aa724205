"""Wiring: settings -> engine, model store, profile channel -> use cases -> servicer registrations."""

from __future__ import annotations

import asyncio

from retain.scoring.v1 import scoring_pb2, scoring_pb2_grpc
from retain_kit.config import Endpoints
from retain_kit.db import create_engine, session_factory
from retain_kit.grpcserver import Registration, channel
from retain_kit.service_main import Built

from retain_scoring.bento_service import ScoringModels, in_process, policy_from
from retain_scoring.config import Settings
from retain_scoring.domain.offers import BetaPrior
from retain_scoring.profile_client import ProfileFeatures
from retain_scoring.server import ScoringServicer
from retain_scoring.service import CustomerScorer, OfferPropensities
from retain_scoring.store import ModelRegistry

SERVICE_NAME = scoring_pb2.DESCRIPTOR.services_by_name["ScoringService"].full_name


def in_process_models(settings: Settings) -> ScoringModels:
    """The BentoML service called in-process (no HTTP hop); bootstraps the prior model into an empty store."""
    return in_process(ModelRegistry(settings.bentoml_home), policy_from(settings))


async def build(settings: Settings, endpoints: Endpoints | None = None) -> Built:
    engine = create_engine(settings.database_url, schema=settings.schema)
    models = await asyncio.to_thread(in_process_models, settings)
    profile_channel = channel((endpoints or Endpoints()).profile_addr)
    customers = CustomerScorer(
        models,
        ProfileFeatures(profile_channel, timeout=settings.rpc_timeout_seconds),
        default_horizon_days=settings.default_horizon_days,
    )
    offers = OfferPropensities(
        session_factory(engine), prior=BetaPrior(settings.offer_prior_alpha, settings.offer_prior_beta)
    )
    servicer = ScoringServicer(customers, offers)
    registration = Registration(servicer, scoring_pb2_grpc.add_ScoringServiceServicer_to_server, SERVICE_NAME)

    async def stop() -> None:
        await profile_channel.close()
        await engine.dispose()

    return [registration], stop
