"""Journeys: definitions as data (versioned and audited by the decision service), the shipped
templates, and the per-journey report (entered, sent, suppressed by reason, converted, lift)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query
from pydantic import BaseModel
from retain.decision.v1 import decision_pb2
from retain_kit.protoconv import from_struct, from_timestamp, to_struct

from retain_gateway.auth import require
from retain_gateway.domain.apikey import Principal
from retain_gateway.roles import Action
from retain_gateway.schemas import ErrorOut
from retain_gateway.state import GatewayState, get_state

router = APIRouter(tags=["journeys"])
State = Annotated[GatewayState, Depends(get_state)]
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (401, 403, 404, 422, 429, 503)}
JourneyId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")]


class JourneyOut(BaseModel):
    journey_id: str
    version: int
    active: bool
    definition: dict[str, Any]
    updated_by: str
    updated_at: datetime | None


class TemplateOut(BaseModel):
    name: str
    title: str
    description: str
    definition: dict[str, Any]


class StepReportOut(BaseModel):
    step_id: str
    kind: str
    entered: int
    sent: int
    suppressed: dict[str, int]
    withheld: int
    converted: int
    failed: int


class TransitionOut(BaseModel):
    source: str
    target: str
    count: int


class ReportOut(BaseModel):
    journey_id: str
    version: int
    entered: int
    treated: int
    holdout: int
    converted_treated: int
    converted_holdout: int
    conversion_treated: float
    conversion_holdout: float
    lift: float
    lift_ci_low: float
    lift_ci_high: float
    active: int
    completed: int
    exited: int
    steps: list[StepReportOut]
    # Customer paths between steps (and from "(start)" / to the end states) for a Sankey.
    transitions: list[TransitionOut]


def _journey(j: decision_pb2.Journey) -> dict[str, Any]:
    return {
        "journey_id": j.journey_id, "version": j.version, "active": j.active,
        "definition": from_struct(j.definition), "updated_by": j.updated_by,
        "updated_at": from_timestamp(j.updated_at) if j.HasField("updated_at") else None,
    }


def _report(r: decision_pb2.JourneyReport) -> dict[str, Any]:
    return {
        "journey_id": r.journey_id, "version": r.version, "entered": r.entered, "treated": r.treated,
        "holdout": r.holdout, "converted_treated": r.converted_treated, "converted_holdout": r.converted_holdout,
        "conversion_treated": r.conversion_treated, "conversion_holdout": r.conversion_holdout, "lift": r.lift,
        "lift_ci_low": r.lift_ci_low, "lift_ci_high": r.lift_ci_high, "active": r.active,
        "completed": r.completed, "exited": r.exited,
        "steps": [
            {"step_id": s.step_id, "kind": s.kind, "entered": s.entered, "sent": s.sent,
             "suppressed": {c.reason: c.count for c in s.suppressed}, "withheld": s.withheld,
             "converted": s.converted, "failed": s.failed}
            for s in r.steps
        ],
        "transitions": [{"source": t.source, "target": t.target, "count": t.count} for t in r.transitions],
    }


@router.get("/v1/journeys", response_model=list[JourneyOut], responses=_ERRORS)
async def list_journeys(
    principal: Annotated[Principal, Depends(require(Action.READ_JOURNEYS))], state: State
) -> Any:
    response = await state.decision.ListJourneys(
        decision_pb2.ListJourneysRequest(workspace_id=principal.workspace_id), timeout=state.timeout
    )
    return [_journey(j) for j in response.journeys]


@router.post("/v1/journeys", response_model=JourneyOut, responses=_ERRORS)
async def upsert_journey(
    definition: Annotated[dict[str, Any], Body(examples=[{
        "journey_id": "cart_note", "name": "Cart note",
        "trigger": {"kind": "event", "event": "Checkout Started"},
        "steps": [{"step_id": "wait", "kind": "wait_event", "event": "Order Completed", "timeout_hours": 4,
                   "on_event": "exit"},
                  {"step_id": "remind", "kind": "send", "offer_id": "next_best", "channels": ["line", "email"]}],
    }])],
    principal: Annotated[Principal, Depends(require(Action.WRITE_JOURNEYS))],
    state: State,
) -> Any:
    """Create or replace a journey; the stored definition gets the next version and an audit record."""
    response = await state.decision.UpsertJourney(
        decision_pb2.UpsertJourneyRequest(
            workspace_id=principal.workspace_id, definition=to_struct(definition), actor=principal.key_id
        ),
        timeout=state.timeout,
    )
    return _journey(response.journey)


@router.get("/v1/journeys/templates", response_model=list[TemplateOut], responses=_ERRORS)
async def list_templates(
    principal: Annotated[Principal, Depends(require(Action.READ_JOURNEYS))], state: State
) -> Any:
    response = await state.decision.ListJourneyTemplates(
        decision_pb2.ListJourneyTemplatesRequest(), timeout=state.timeout
    )
    return [
        {"name": t.name, "title": t.title, "description": t.description, "definition": from_struct(t.definition)}
        for t in response.templates
    ]


@router.post("/v1/journeys/templates/{name}", response_model=JourneyOut, responses=_ERRORS)
async def install_template(
    name: JourneyId,
    principal: Annotated[Principal, Depends(require(Action.WRITE_JOURNEYS))],
    state: State,
) -> Any:
    """Install a shipped template as a journey of this workspace (a new version if it exists)."""
    response = await state.decision.UpsertJourney(
        decision_pb2.UpsertJourneyRequest(workspace_id=principal.workspace_id, template=name,
                                          actor=principal.key_id),
        timeout=state.timeout,
    )
    return _journey(response.journey)


@router.get("/v1/journeys/{journey_id}", response_model=JourneyOut, responses=_ERRORS)
async def get_journey(
    journey_id: JourneyId,
    principal: Annotated[Principal, Depends(require(Action.READ_JOURNEYS))],
    state: State,
    version: Annotated[int, Query(ge=0, le=2**31 - 1, description="0 = the current version")] = 0,
) -> Any:
    response = await state.decision.GetJourney(
        decision_pb2.GetJourneyRequest(workspace_id=principal.workspace_id, journey_id=journey_id, version=version),
        timeout=state.timeout,
    )
    return _journey(response.journey)


@router.get("/v1/journeys/{journey_id}/report", response_model=ReportOut, responses=_ERRORS)
async def journey_report(
    journey_id: JourneyId,
    principal: Annotated[Principal, Depends(require(Action.READ_JOURNEYS))],
    state: State,
) -> Any:
    response = await state.decision.GetJourneyReport(
        decision_pb2.GetJourneyReportRequest(workspace_id=principal.workspace_id, journey_id=journey_id),
        timeout=state.timeout,
    )
    return _report(response.report)
