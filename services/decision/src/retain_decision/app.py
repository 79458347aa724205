"""Wiring: settings -> engine, counter store, client stubs -> use cases -> servicer registrations."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from retain.audit.v1 import audit_pb2_grpc
from retain.channels.v1 import channels_pb2_grpc
from retain.decision.v1 import decision_pb2, decision_pb2_grpc
from retain.profile.v1 import profile_pb2_grpc
from retain.scoring.v1 import scoring_pb2_grpc
from retain_kit import redis_client
from retain_kit.config import Endpoints
from retain_kit.db import create_engine, session_factory
from retain_kit.grpcserver import Registration, channel
from retain_kit.protoconv import utcnow
from retain_kit.service_main import Built

from retain_decision.clients import GrpcAuditSink, GrpcDispatcher, GrpcProfileReader, GrpcScorer
from retain_decision.config import Settings
from retain_decision.counters import MemoryCounterStore, RedisCounterStore
from retain_decision.domain.policies import GovernancePolicy
from retain_decision.journeys_server import JourneyDecisionServicer
from retain_decision.journeys_service import Journeys
from retain_decision.service import Catalogue, Clock, Decisions, Limits, Policies

SERVICE_NAME = decision_pb2.DESCRIPTOR.services_by_name["DecisionService"].full_name
log = logging.getLogger(__name__)


def limits(settings: Settings) -> Limits:
    return Limits(
        rpc_timeout_seconds=settings.rpc_timeout_seconds,
        default_limit=settings.default_limit,
        max_limit=settings.max_limit,
        default_locale=settings.default_locale,
        release_interval_seconds=settings.release_interval_seconds,
    )


def default_policy(settings: Settings) -> GovernancePolicy:
    return GovernancePolicy(
        contact_costs=settings.contact_costs(),
        default_time_zone=settings.default_time_zone,
        contact_slot_minutes=settings.contact_slot_minutes,
        arbitration_ms=settings.arbitration_ms,
    )


async def build(settings: Settings, endpoints: Endpoints | None = None, *, clock: Clock = utcnow) -> Built:
    """`clock` lets a test run a replica at a chosen wall time (quiet hours, hold release)."""
    endpoints = endpoints or Endpoints()
    engine = create_engine(settings.database_url, schema=settings.schema)
    sessions = session_factory(engine)
    timeout = settings.rpc_timeout_seconds
    channels = {
        "profile": channel(endpoints.profile_addr),
        "scoring": channel(endpoints.scoring_addr),
        "channels": channel(endpoints.channels_addr),
        "audit": channel(endpoints.audit_addr),
    }
    counters: RedisCounterStore | MemoryCounterStore
    if settings.redis_url:
        counters = RedisCounterStore(redis_client.connect(settings.redis_url))
    elif settings.single_process_caps:
        # An explicit opt-in: the caps then hold for this one process only.
        log.warning("cap counters are per process (RETAIN_DECISION_SINGLE_PROCESS_CAPS=true)")
        counters = MemoryCounterStore()
    else:
        # Governance is fail-closed: caps that cannot be counted across replicas are not caps.
        raise SystemExit("decision needs REDIS_URL for frequency caps (or RETAIN_DECISION_SINGLE_PROCESS_CAPS=true)")
    audit = GrpcAuditSink(audit_pb2_grpc.AuditServiceStub(channels["audit"]), timeout=timeout)
    catalogue = Catalogue(
        sessions,
        audit,
        seed_demo=settings.seed_demo_catalogue,
        clock=clock,
        cache_seconds=settings.config_cache_seconds,
    )
    policies = Policies(
        sessions, audit, defaults=default_policy(settings), clock=clock, cache_seconds=settings.config_cache_seconds
    )
    decisions = Decisions(
        catalogue,
        policies=policies,
        profiles=GrpcProfileReader(profile_pb2_grpc.ProfileServiceStub(channels["profile"]), timeout=timeout),
        scorer=GrpcScorer(scoring_pb2_grpc.ScoringServiceStub(channels["scoring"]), timeout=timeout),
        dispatcher=GrpcDispatcher(channels_pb2_grpc.ChannelServiceStub(channels["channels"]), timeout=timeout),
        audit=audit,
        counters=counters,
        sessions=sessions,
        limits=limits(settings),
        clock=clock,
    )
    journeys = Journeys(sessions, audit, catalogue, clock=clock)
    servicer = JourneyDecisionServicer(catalogue, decisions, policies, journeys)
    registration = Registration(servicer, decision_pb2_grpc.add_DecisionServiceServicer_to_server, SERVICE_NAME)
    releaser = asyncio.create_task(decisions.release_loop())

    async def on_stop() -> None:
        releaser.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await releaser
        await counters.close()
        for ch in channels.values():
            await ch.close()
        await engine.dispose()

    return [registration], on_stop
