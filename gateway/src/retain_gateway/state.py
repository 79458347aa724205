"""Typed application state built by the lifespan; routes reach it through `get_state`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
from fastapi import Request
from grpc_health.v1 import health_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from retain_gateway.config import Settings
from retain_gateway.domain.authcache import AuthCache
from retain_gateway.ratelimit import RateLimiter

if TYPE_CHECKING:
    # The async stub types exist only in the generated .pyi files.
    from retain.audit.v1.audit_pb2_grpc import AuditServiceAsyncStub
    from retain.decision.v1.decision_pb2_grpc import DecisionServiceAsyncStub
    from retain.profile.v1.profile_pb2_grpc import ProfileServiceAsyncStub


@dataclass
class Downstream:
    """One gRPC service the gateway calls, with the name its health check is registered under."""

    name: str
    service: str
    channel: grpc.aio.Channel
    health: health_pb2_grpc.HealthStub


@dataclass
class GatewayState:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    profile: ProfileServiceAsyncStub
    decision: DecisionServiceAsyncStub
    audit: AuditServiceAsyncStub
    auth_cache: AuthCache
    limiter: RateLimiter | None = None
    downstreams: list[Downstream] = field(default_factory=list)

    @property
    def timeout(self) -> float:
        return self.settings.rpc_timeout_seconds


def state_of(request: Request) -> GatewayState:
    state = request.app.state.gateway
    assert isinstance(state, GatewayState)
    return state


async def get_state(request: Request) -> GatewayState:
    """The dependency. Async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop on every
    request."""
    return state_of(request)
