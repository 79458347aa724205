"""GET /healthz: each downstream's gRPC health plus the gateway's own database; GET /livez: this process
answers. No auth on either."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from grpc_health.v1 import health_pb2
from sqlalchemy import text

from retain_gateway.schemas import HealthOut
from retain_gateway.state import Downstream, GatewayState, get_state

router = APIRouter(tags=["health"])
SERVING = "SERVING"


async def _check(downstream: Downstream, timeout: float) -> str:
    try:
        response = await downstream.health.Check(
            health_pb2.HealthCheckRequest(service=downstream.service), timeout=timeout
        )
    except grpc.aio.AioRpcError as exc:
        return "SERVICE_UNKNOWN" if exc.code() == grpc.StatusCode.NOT_FOUND else exc.code().name
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


async def _check_db(state: GatewayState, timeout: float) -> str:
    try:
        async with asyncio.timeout(timeout):
            async with state.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except Exception:
        # Any failure here means the gateway cannot authenticate anyone.
        return "UNAVAILABLE"
    return SERVING


@router.get("/livez")
async def livez() -> dict[str, str]:
    """Liveness and readiness probes: nothing downstream is asked, so an outage elsewhere neither restarts the
    gateway nor takes it out of service (clients get its 503 with Retry-After instead)."""
    return {"status": "ok"}


@router.get("/healthz", response_model=HealthOut, responses={503: {"model": HealthOut}})
async def healthz(state: Annotated[GatewayState, Depends(get_state)]) -> Any:
    timeout = state.settings.health_timeout_seconds
    names = [d.name for d in state.downstreams] + ["gateway_db"]
    statuses = await asyncio.gather(
        *(_check(d, timeout) for d in state.downstreams), _check_db(state, max(timeout, 1.0))
    )
    services = dict(zip(names, statuses, strict=True))
    healthy = all(s == SERVING for s in statuses)
    body = {"status": "ok" if healthy else "degraded", "services": services}
    return JSONResponse(body, 200 if healthy else 503)
