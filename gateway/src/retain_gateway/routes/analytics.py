"""Retention analytics: value and leakage, cohorts, priority segments and play effectiveness.

Computed by profile's AnalyticsService (which asks scoring for churn risk and expected value, and audit for
decisions and messages); every response states its time window and the model versions behind it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import grpc
from fastapi import APIRouter, Depends, Path, Query
from retain.profile.v1 import analytics_pb2, analytics_pb2_grpc
from retain.scoring.v1 import scoring_pb2, scoring_pb2_grpc
from retain_kit.protoconv import to_timestamp

from retain_gateway.auth import require
from retain_gateway.convert import to_json
from retain_gateway.domain.apikey import Principal
from retain_gateway.errors import ApiError
from retain_gateway.roles import Action
from retain_gateway.routes.audit import resolve_customer
from retain_gateway.schemas import ErrorOut
from retain_gateway.state import GatewayState, get_state

if TYPE_CHECKING:
    from retain.profile.v1.analytics_pb2_grpc import AnalyticsServiceAsyncStub
    from retain.scoring.v1.scoring_pb2_grpc import ScoringServiceAsyncStub

router = APIRouter(tags=["analytics"])
State = Annotated[GatewayState, Depends(get_state)]
Reader = Annotated[Principal, Depends(require(Action.READ_ANALYTICS))]
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (401, 403, 422, 429, 503)}
# Reports read every customer of the workspace and score them in batches: more time than an ordinary call.
_REPORT_TIMEOUT = 120.0
Since = Annotated[datetime | None, Query(description="Start of the window (default: the first order)")]
Until = Annotated[datetime | None, Query(description="End of the window, exclusive (default: now)")]
Horizon = Annotated[int, Query(ge=0, le=3650, description="Scoring horizon in days (0: scoring's default)")]


def _channel(state: GatewayState, name: str) -> grpc.aio.Channel:
    for downstream in state.downstreams:
        if downstream.name == name:
            return downstream.channel
    raise ApiError(503, f"{name} is not configured")


def _stub(state: GatewayState) -> AnalyticsServiceAsyncStub:
    # AnalyticsService runs in the profile process, so it shares profile's channel.
    return analytics_pb2_grpc.AnalyticsServiceStub(_channel(state, "profile"))


def _scoring(state: GatewayState) -> ScoringServiceAsyncStub:
    return scoring_pb2_grpc.ScoringServiceStub(_channel(state, "scoring"))


def _check(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and until <= since:
        raise ApiError(422, "until must be after since", field="until")


def _out(response: Any) -> dict[str, Any]:
    return to_json(response)


@router.get("/v1/analytics/value-leakage", responses=_ERRORS)
async def value_leakage(
    principal: Reader, state: State, since: Since = None, until: Until = None, horizon_days: Horizon = 0
) -> dict[str, Any]:
    """Revenue by segment, lifecycle stage, acquisition cohort, category and channel, the monthly trend,
    and leakage: churned value, value at risk, inactivity, discount dependence and service failures."""
    _check(since, until)
    response = await _stub(state).GetValueLeakage(
        analytics_pb2.GetValueLeakageRequest(
            workspace_id=principal.workspace_id, since=to_timestamp(since), until=to_timestamp(until),
            horizon_days=horizon_days,
        ),
        timeout=_REPORT_TIMEOUT,
    )
    return _out(response)


@router.get("/v1/analytics/cohorts", responses=_ERRORS)
async def cohorts(
    principal: Reader,
    state: State,
    since: Since = None,
    until: Until = None,
    months: Annotated[int, Query(ge=1, le=60, description="Months after acquisition to report")] = 12,
    horizon_days: Horizon = 0,
) -> dict[str, Any]:
    """Retention curves, cumulative revenue per customer, repeat and active rates, LTV to date and predicted,
    per acquisition month (first order)."""
    _check(since, until)
    response = await _stub(state).GetCohorts(
        analytics_pb2.GetCohortsRequest(
            workspace_id=principal.workspace_id, since=to_timestamp(since), until=to_timestamp(until),
            months=months, horizon_days=horizon_days,
        ),
        timeout=_REPORT_TIMEOUT,
    )
    return _out(response)


@router.get("/v1/analytics/priority-segments", responses=_ERRORS)
async def priority_segments(
    principal: Reader, state: State, since: Since = None, until: Until = None, horizon_days: Horizon = 0
) -> dict[str, Any]:
    """Segments ranked by value at risk and value, each with a stayers-versus-leavers feature comparison."""
    _check(since, until)
    response = await _stub(state).GetPrioritySegments(
        analytics_pb2.GetPrioritySegmentsRequest(
            workspace_id=principal.workspace_id, since=to_timestamp(since), until=to_timestamp(until),
            horizon_days=horizon_days,
        ),
        timeout=_REPORT_TIMEOUT,
    )
    return _out(response)


@router.get("/v1/analytics/plays", responses=_ERRORS)
async def plays(
    principal: Reader,
    state: State,
    since: Annotated[datetime | None, Query(description="Start of the window (default: 90 days before until)")] = None,
    until: Until = None,
    conversion_days: Annotated[int, Query(ge=1, le=90, description="Days after a message that count")] = 7,
) -> dict[str, Any]:
    """Per offer: sends, conversions, lift over holdout with a 95% interval, incentive cost and value saved;
    per channel: message load, failures, suppressions and engagement."""
    _check(since, until)
    response = await _stub(state).GetPlays(
        analytics_pb2.GetPlaysRequest(
            workspace_id=principal.workspace_id, since=to_timestamp(since), until=to_timestamp(until),
            conversion_days=conversion_days,
        ),
        timeout=_REPORT_TIMEOUT,
    )
    return _out(response)


@router.get("/v1/analytics/customers/{customer_id}/scores", responses=_ERRORS)
async def customer_scores(
    customer_id: Annotated[str, Path(max_length=256)],
    principal: Reader,
    state: State,
    horizon_days: Horizon = 0,
) -> dict[str, Any]:
    """Churn risk, P(alive), expected value, CLV and value at risk of one customer, each with its model;
    a read only (unlike next-best-actions, nothing is decided or audited)."""
    resolved = await resolve_customer(state, principal.workspace_id, customer_id)
    response = await _scoring(state).ScoreCustomers(
        scoring_pb2.ScoreCustomersRequest(
            workspace_id=principal.workspace_id, customers=[scoring_pb2.CustomerInput(customer_id=resolved)],
            horizon_days=horizon_days,
        ),
        timeout=max(state.timeout, 10.0),
    )
    if not response.scores:
        raise ApiError(404, "customer not found", field="customer_id")
    return to_json(response.scores[0])
