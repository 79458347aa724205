"""Wiring: settings -> engine, model store, profile channel -> use cases -> servicer registrations."""

from __future__ import annotations

import asyncio
import contextlib

from retain.scoring.v1 import scoring_pb2, scoring_pb2_grpc
from retain_kit.config import Endpoints
from retain_kit.db import create_engine, session_factory
from retain_kit.grpcserver import Registration, channel
from retain_kit.service_main import Built

from retain_scoring.bento_service import ScoringModels, in_process, policy_from
from retain_scoring.config import Settings
from retain_scoring.domain.offers import BetaPrior
from retain_scoring.profile_client import ProfileFeatures, ProfileOrders
from retain_scoring.retraining import Retrainer, WorkspaceTraining, train_workspace
from retain_scoring.server import ScoringServicer
from retain_scoring.service import CustomerScorer, OfferPropensities
from retain_scoring.store import ModelRegistry

SERVICE_NAME = scoring_pb2.DESCRIPTOR.services_by_name["ScoringService"].full_name


def in_process_models(settings: Settings) -> ScoringModels:
    """The BentoML service called in-process (no HTTP hop); bootstraps the prior model into an empty store."""
    return in_process(ModelRegistry(settings.bentoml_home), policy_from(settings))


def scheduled_retraining(settings: Settings, customers: CustomerScorer, data: ProfileOrders) -> Retrainer | None:
    """The retraining schedule settings ask for, or None when retrain_interval_hours is 0."""
    if settings.retrain_interval_hours <= 0:
        return None

    async def train(workspace: str) -> WorkspaceTraining:
        return await train_workspace(workspace, data=data, models=customers.models,
                                     holdout_days=settings.retrain_holdout_days,
                                     score_horizon_days=settings.default_horizon_days)

    return Retrainer(
        train, interval_seconds=settings.retrain_interval_hours * 3600, workspaces=settings.retrain_workspaces,
        recent=lambda: customers.recent_workspaces(settings.retrain_recent_hours * 3600),
    )


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
        session_factory(engine), prior=BetaPrior(settings.offer_prior_alpha, settings.offer_prior_beta),
        counts_cache_seconds=settings.offer_counts_cache_seconds,
    )
    servicer = ScoringServicer(customers, offers)
    registration = Registration(servicer, scoring_pb2_grpc.add_ScoringServiceServicer_to_server, SERVICE_NAME)
    retrainer = scheduled_retraining(settings, customers, ProfileOrders(profile_channel,
                                                                         timeout=settings.rpc_timeout_seconds))
    task = asyncio.create_task(retrainer.run()) if retrainer is not None else None

    async def stop() -> None:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await profile_channel.close()
        await engine.dispose()

    return [registration], stop
