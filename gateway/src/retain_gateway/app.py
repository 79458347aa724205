"""Composition: settings -> engine, gRPC stubs, Redis -> typed state -> FastAPI app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute
from grpc_health.v1 import health_pb2_grpc
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from retain.audit.v1 import audit_pb2, audit_pb2_grpc
from retain.channels.v1 import channels_pb2
from retain.decision.v1 import decision_pb2, decision_pb2_grpc
from retain.profile.v1 import profile_pb2, profile_pb2_grpc
from retain.scoring.v1 import scoring_pb2
from retain_kit import redis_client
from retain_kit.config import Endpoints
from retain_kit.db import create_engine, session_factory
from retain_kit.grpcserver import channel
from sqlalchemy.ext.asyncio import AsyncEngine

from retain_gateway import admission, console, errors
from retain_gateway.config import Settings
from retain_gateway.domain.authcache import AuthCache
from retain_gateway.ratelimit import RateLimiter
from retain_gateway.routes import analytics as analytics_routes
from retain_gateway.routes import audit, customers, decisions, health, tracking, webhooks
from retain_gateway.routes import journeys as journeys_routes
from retain_gateway.routes import policies as policies_routes
from retain_gateway.routes import profiles as profile_routes
from retain_gateway.state import Downstream, GatewayState

PROFILE = profile_pb2.DESCRIPTOR.services_by_name["ProfileService"].full_name
DECISION = decision_pb2.DESCRIPTOR.services_by_name["DecisionService"].full_name
AUDIT = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name
SCORING = scoring_pb2.DESCRIPTOR.services_by_name["ScoringService"].full_name
CHANNELS = channels_pb2.DESCRIPTOR.services_by_name["ChannelService"].full_name

# The ingestion routes get their own admission pool (admission.py); derived so a new one joins it.
INGEST_PATHS = frozenset(route.path for route in tracking.router.routes if isinstance(route, APIRoute))

DESCRIPTION = """
The public REST surface of Retain. Authenticate with an API key as `Authorization: Bearer rk_…`,
as the HTTP Basic user name with an empty password (Segment write key), or as `X-API-Key`.
Every request is scoped to the key's workspace. Errors are `{"error", "detail", "field"}`.
"""


def create_app(
    settings: Settings, *, endpoints: Endpoints | None = None, engine: AsyncEngine | None = None
) -> FastAPI:
    """The gateway app. A given `engine` is used as is and left open (tests own theirs)."""
    targets = endpoints or Endpoints()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = engine or create_engine(settings.database_url, schema=settings.schema)
        channels = {
            "profile": channel(targets.profile_addr),
            "decision": channel(targets.decision_addr),
            "audit": channel(targets.audit_addr),
            # Not called by any route yet; held so /healthz reports every service of the suite.
            "scoring": channel(targets.scoring_addr),
            "channels": channel(targets.channels_addr),
        }
        redis = redis_client.connect(settings.redis_url) if settings.redis_url else None
        app.state.gateway = GatewayState(
            settings=settings,
            engine=db,
            sessions=session_factory(db),
            profile=profile_pb2_grpc.ProfileServiceStub(channels["profile"]),
            decision=decision_pb2_grpc.DecisionServiceStub(channels["decision"]),
            audit=audit_pb2_grpc.AuditServiceStub(channels["audit"]),
            auth_cache=AuthCache(ttl=settings.auth_cache_ttl_seconds, maxsize=settings.auth_cache_size),
            limiter=(
                RateLimiter(redis, limit=settings.rate_limit, window_seconds=settings.rate_window_seconds)
                if redis is not None
                else None
            ),
            downstreams=[
                Downstream(name, service, channels[name], health_pb2_grpc.HealthStub(channels[name]))
                for name, service in (
                    ("profile", PROFILE),
                    ("decision", DECISION),
                    ("audit", AUDIT),
                    ("scoring", SCORING),
                    ("channels", CHANNELS),
                )
            ],
        )
        try:
            yield
        finally:
            for ch in channels.values():
                await ch.close()
            if redis is not None:
                await redis.aclose()
            if engine is None:
                await db.dispose()

    app = FastAPI(title="Retain gateway", version="1.0.0", description=DESCRIPTION, lifespan=lifespan)
    errors.install(app, retry_after_seconds=settings.retry_after_seconds)
    pools = admission.build_pools(
        default_limit=settings.max_in_flight,
        ingest_limit=settings.ingest_max_in_flight,
        wait_seconds=settings.admission_wait_ms / 1000,
    )
    if pools:
        app.add_middleware(
            admission.AdmissionMiddleware,
            pools=pools,
            ingest_paths=INGEST_PATHS,
            retry_after_seconds=settings.retry_after_seconds,
        )
    for module in (tracking, customers, decisions, audit, health):
        app.include_router(module.router)
    app.include_router(profile_routes.router)
    app.include_router(policies_routes.router)
    app.include_router(analytics_routes.router)
    app.include_router(journeys_routes.router)
    app.include_router(console.router)
    app.include_router(webhooks.router)
    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,livez")
    return app
