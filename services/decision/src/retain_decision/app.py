"""Wiring: settings -> engine, client stubs -> use cases -> servicer registrations."""

from __future__ import annotations

from retain.audit.v1 import audit_pb2_grpc
from retain.channels.v1 import channels_pb2_grpc
from retain.decision.v1 import decision_pb2, decision_pb2_grpc
from retain.profile.v1 import profile_pb2_grpc
from retain.scoring.v1 import scoring_pb2_grpc
from retain_kit.config import Endpoints
from retain_kit.db import create_engine, session_factory
from retain_kit.grpcserver import Registration, channel
from retain_kit.service_main import Built

from retain_decision.clients import GrpcAuditSink, GrpcDispatcher, GrpcProfileReader, GrpcScorer
from retain_decision.config import Settings
from retain_decision.server import DecisionServicer
from retain_decision.service import Catalogue, Decisions, Policy

SERVICE_NAME = decision_pb2.DESCRIPTOR.services_by_name["DecisionService"].full_name


def policy(settings: Settings) -> Policy:
    return Policy(
        contact_costs=settings.contact_costs(),
        rpc_timeout_seconds=settings.rpc_timeout_seconds,
        default_limit=settings.default_limit,
        max_limit=settings.max_limit,
        default_locale=settings.default_locale,
    )


async def build(settings: Settings, endpoints: Endpoints | None = None) -> Built:
    endpoints = endpoints or Endpoints()
    engine = create_engine(settings.database_url, schema=settings.schema)
    timeout = settings.rpc_timeout_seconds
    channels = {
        "profile": channel(endpoints.profile_addr),
        "scoring": channel(endpoints.scoring_addr),
        "channels": channel(endpoints.channels_addr),
        "audit": channel(endpoints.audit_addr),
    }
    audit = GrpcAuditSink(audit_pb2_grpc.AuditServiceStub(channels["audit"]), timeout=timeout)
    catalogue = Catalogue(session_factory(engine), audit, seed_demo=settings.seed_demo_catalogue)
    decisions = Decisions(
        catalogue,
        profiles=GrpcProfileReader(profile_pb2_grpc.ProfileServiceStub(channels["profile"]), timeout=timeout),
        scorer=GrpcScorer(scoring_pb2_grpc.ScoringServiceStub(channels["scoring"]), timeout=timeout),
        dispatcher=GrpcDispatcher(channels_pb2_grpc.ChannelServiceStub(channels["channels"]), timeout=timeout),
        audit=audit,
        policy=policy(settings),
    )
    servicer = DecisionServicer(catalogue, decisions)
    registration = Registration(servicer, decision_pb2_grpc.add_DecisionServiceServicer_to_server, SERVICE_NAME)

    async def on_stop() -> None:
        for ch in channels.values():
            await ch.close()
        await engine.dispose()

    return [registration], on_stop
