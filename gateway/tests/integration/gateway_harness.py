"""A gateway app wired to the real services in-process (tests/support/inprocess.py).

Fixtures are re-exported by conftest.py; test modules import `Harness` from here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from retain.audit.v1 import audit_pb2_grpc
from retain_gateway import keys
from retain_gateway.app import create_app
from retain_gateway.config import Settings
from retain_kit.config import Endpoints
from retain_kit.db import session_factory
from retain_kit.grpcserver import channel
from retain_kit.testing import DbTarget
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.support.inprocess import start_suite

GATEWAY_DIR = Path(__file__).resolve().parents[2]


@dataclass
class Harness:
    client: httpx.AsyncClient
    sessions: async_sessionmaker[AsyncSession]
    audit: audit_pb2_grpc.AuditServiceStub
    running: set[str]
    app: Any
    # Where the in-process services listen (a test may run a journey worker against them).
    endpoints: Endpoints = field(default_factory=Endpoints)
    _channels: list[grpc.aio.Channel] = field(default_factory=list)

    def need(self, *services: str) -> None:
        missing = [s for s in services if s not in self.running]
        if missing:
            pytest.skip(f"{', '.join(missing)} servicer not importable yet")

    async def key(self, workspace_id: str, *roles: str) -> str:
        await keys.create_workspace(self.sessions, workspace_id=workspace_id, name=workspace_id)
        return await keys.issue_key(self.sessions, workspace_id=workspace_id, roles=roles, name="test")


HarnessFactory = Callable[..., Any]


@pytest.fixture
async def make_harness(
    db_target: DbTarget, grpc_serve: Any, redis_url: str, tmp_path: Path
) -> AsyncIterator[HarnessFactory]:
    """Builds a harness; `down=` names services to leave unreachable, settings overrides via kwargs."""
    exits: list[Any] = []
    stops: list[Callable[[], Awaitable[None]]] = []
    channels: list[grpc.aio.Channel] = []

    async def build(*, down: tuple[str, ...] = (), **overrides: Any) -> Harness:
        engine: AsyncEngine = await db_target.migrate(GATEWAY_DIR)
        endpoints = await start_suite(
            db_target=db_target, grpc_serve=grpc_serve, redis_url=redis_url, tmp_path=tmp_path, stops=stops,
            down=down,
        )
        running = {"audit", "profile", "scoring", "channels", "decision"} - set(down)
        audit_target = endpoints.audit_addr
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
            endpoints=endpoints,
        )

    yield build
    for ctx in reversed(exits):
        await ctx.__aexit__(None, None, None)
    for ch in channels:
        await ch.close()
    for stop in reversed(stops):
        await stop()


@pytest.fixture
async def gw(make_harness: HarnessFactory) -> Harness:
    harness: Harness = await make_harness()
    return harness
