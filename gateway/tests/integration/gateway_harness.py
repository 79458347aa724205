"""A gateway app wired to real servicers in-process: audit always; profile and decision when importable.

Fixtures are re-exported by conftest.py; test modules import `Harness` from here.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from retain.audit.v1 import audit_pb2_grpc
from retain_gateway import keys
from retain_gateway.app import AUDIT, DECISION, PROFILE, create_app
from retain_gateway.config import Settings
from retain_kit.config import Endpoints
from retain_kit.db import session_factory
from retain_kit.grpcserver import Registration, channel
from retain_kit.testing import DbTarget, free_port
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

GATEWAY_DIR = Path(__file__).resolve().parents[2]
SERVICES_DIR = GATEWAY_DIR.parent / "services"


def _optional(module: str) -> Any | None:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


@dataclass
class Harness:
    client: httpx.AsyncClient
    sessions: async_sessionmaker[AsyncSession]
    audit: audit_pb2_grpc.AuditServiceStub
    running: set[str]
    app: Any
    _channels: list[grpc.aio.Channel] = field(default_factory=list)

    def need(self, *services: str) -> None:
        missing = [s for s in services if s not in self.running]
        if missing:
            pytest.skip(f"{', '.join(missing)} servicer not importable yet")

    async def key(self, workspace_id: str, *roles: str) -> str:
        await keys.create_workspace(self.sessions, workspace_id=workspace_id, name=workspace_id)
        return await keys.issue_key(self.sessions, workspace_id=workspace_id, roles=roles, name="test")


async def _serve_audit(db_target: DbTarget, grpc_serve: Any) -> str:
    from retain_audit.server import AuditServicer
    from retain_audit.service import AuditLog

    engine = await db_target.migrate(SERVICES_DIR / "audit")
    servicer = AuditServicer(AuditLog(session_factory(engine)))
    target: str = await grpc_serve(
        [Registration(servicer, audit_pb2_grpc.add_AuditServiceServicer_to_server, AUDIT)]
    )
    return target


async def _serve_profile(
    db_target: DbTarget, grpc_serve: Any, audit_target: str, channels: list[grpc.aio.Channel]
) -> str | None:
    server = _optional("retain_profile.server")
    service = _optional("retain_profile.service")
    audit_client = _optional("retain_profile.audit_client")
    publisher = _optional("retain_profile.publisher")
    if server is None or service is None or audit_client is None or publisher is None:
        return None
    from retain.profile.v1 import profile_pb2_grpc

    engine = await db_target.migrate(SERVICES_DIR / "profile")
    audit_channel = channel(audit_target)
    channels.append(audit_channel)
    profiles = service.Profiles(
        session_factory(engine),
        audit=audit_client.GrpcAuditSink(audit_channel, timeout=2.0),
        publisher=publisher.DisabledPublisher(),
    )
    registration = Registration(
        server.ProfileServicer(profiles), profile_pb2_grpc.add_ProfileServiceServicer_to_server, PROFILE
    )
    target: str = await grpc_serve([registration])
    return target


async def _serve_decision(
    db_target: DbTarget,
    grpc_serve: Any,
    *,
    profile_target: str,
    audit_target: str,
    channels: list[grpc.aio.Channel],
) -> str | None:
    app = _optional("retain_decision.app")
    clients = _optional("retain_decision.clients")
    server = _optional("retain_decision.server")
    service = _optional("retain_decision.service")
    config = _optional("retain_decision.config")
    if app is None or clients is None or server is None or service is None or config is None:
        return None
    from retain.audit.v1 import audit_pb2_grpc as audit_grpc
    from retain.channels.v1 import channels_pb2_grpc
    from retain.decision.v1 import decision_pb2_grpc
    from retain.profile.v1 import profile_pb2_grpc
    from retain.scoring.v1 import scoring_pb2_grpc

    engine = await db_target.migrate(SERVICES_DIR / "decision")
    # Scoring and channels are not part of these tests: their addresses refuse connections.
    chans = {
        "profile": channel(profile_target),
        "audit": channel(audit_target),
        "scoring": channel(f"127.0.0.1:{free_port()}"),
        "channels": channel(f"127.0.0.1:{free_port()}"),
    }
    channels.extend(chans.values())
    audit = clients.GrpcAuditSink(audit_grpc.AuditServiceStub(chans["audit"]), timeout=2.0)
    catalogue = service.Catalogue(session_factory(engine), audit, seed_demo=False)
    decisions = service.Decisions(
        catalogue,
        profiles=clients.GrpcProfileReader(profile_pb2_grpc.ProfileServiceStub(chans["profile"]), timeout=2.0),
        scorer=clients.GrpcScorer(scoring_pb2_grpc.ScoringServiceStub(chans["scoring"]), timeout=2.0),
        dispatcher=clients.GrpcDispatcher(channels_pb2_grpc.ChannelServiceStub(chans["channels"]), timeout=2.0),
        audit=audit,
        policy=app.policy(config.Settings()),
    )
    registration = Registration(
        server.DecisionServicer(catalogue, decisions),
        decision_pb2_grpc.add_DecisionServiceServicer_to_server,
        DECISION,
    )
    target: str = await grpc_serve([registration])
    return target


HarnessFactory = Callable[..., Any]


@pytest.fixture
async def make_harness(db_target: DbTarget, grpc_serve: Any) -> AsyncIterator[HarnessFactory]:
    """Builds a harness; `down=` names services to leave unreachable, settings overrides via kwargs."""
    exits: list[Any] = []
    channels: list[grpc.aio.Channel] = []

    async def build(*, down: tuple[str, ...] = (), **overrides: Any) -> Harness:
        engine: AsyncEngine = await db_target.migrate(GATEWAY_DIR)
        unreachable = f"127.0.0.1:{free_port()}"
        audit_target = await _serve_audit(db_target, grpc_serve)
        running = {"audit"}
        profile_target = None
        if "profile" not in down:
            profile_target = await _serve_profile(db_target, grpc_serve, audit_target, channels)
        if profile_target:
            running.add("profile")
        decision_target = None
        if "decision" not in down:
            decision_target = await _serve_decision(
                db_target,
                grpc_serve,
                profile_target=profile_target or unreachable,
                audit_target=audit_target,
                channels=channels,
            )
        if decision_target:
            running.add("decision")
        endpoints = Endpoints(
            profile_addr=profile_target or unreachable,
            decision_addr=decision_target or unreachable,
            audit_addr=audit_target if "audit" not in down else unreachable,
        )
        if "audit" in down:
            running.discard("audit")
        settings = Settings(**{"rpc_timeout_seconds": 2.0, "redis_url": "-", **overrides})
        if settings.redis_url == "-":
            # An empty value would fall back to REDIS_URL; these tests opt in to Redis explicitly.
            settings.redis_url = ""
        app = create_app(settings, endpoints=endpoints, engine=engine)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        exits.append(lifespan)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")
        exits.append(client)
        audit_channel = channel(audit_target)
        channels.append(audit_channel)
        return Harness(
            client=client,
            sessions=session_factory(engine),
            audit=audit_pb2_grpc.AuditServiceStub(audit_channel),
            running=running,
            app=app,
        )

    yield build
    for ctx in reversed(exits):
        await ctx.__aexit__(None, None, None)
    for ch in channels:
        await ch.close()


@pytest.fixture
async def gw(make_harness: HarnessFactory) -> Harness:
    harness: Harness = await make_harness()
    return harness
