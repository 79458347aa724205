"""Profile administration: lifecycle settings, rule-defined segments and PDPA access/erasure requests."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from retain.profile.v1 import profile_pb2

from retain_gateway.auth import require
from retain_gateway.convert import to_json
from retain_gateway.domain.apikey import Principal
from retain_gateway.roles import Action
from retain_gateway.routes.customers import customer_json
from retain_gateway.schemas import ErrorOut, Json
from retain_gateway.state import GatewayState, get_state

router = APIRouter(tags=["profiles"])
State = Annotated[GatewayState, Depends(get_state)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (401, 403, 404, 409, 422, 429, 503)
}


class LifecycleThresholdsIO(BaseModel):
    """Days; a repeat buyer is at risk after gap_multiplier x their usual gap, never before min_gap_days."""

    new_days: float | None = Field(None, gt=0)
    at_risk_days: float | None = Field(None, gt=0)
    lapsed_days: float | None = Field(None, gt=0)
    churned_days: float | None = Field(None, gt=0)
    min_gap_days: float | None = Field(None, gt=0)
    gap_multiplier: float | None = Field(None, gt=0)


class ProfileSettingsIn(BaseModel):
    lifecycle: LifecycleThresholdsIO = Field(description="Only the thresholds given change.")


class ProfileSettingsOut(BaseModel):
    lifecycle: LifecycleThresholdsIO
    updated_at: datetime | None
    updated_by: str


class SegmentIn(BaseModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
    expression: str = Field(
        min_length=1, max_length=1000, examples=["monetary_total > 5000 and lifecycle_stage == 'at_risk'"]
    )
    description: str = Field("", max_length=500)


class SegmentOut(BaseModel):
    name: str
    expression: str
    description: str
    created_at: datetime | None
    builtin: bool


class SegmentsOut(BaseModel):
    segments: list[SegmentOut]
    features: list[str] = Field(description="Names a segment expression may use.")


class SegmentCountOut(BaseModel):
    name: str
    members: int
    customers: int
    as_of: datetime | None


class ErasureIn(BaseModel):
    customer_id: str = Field(min_length=1, max_length=256)


class ErasureOut(BaseModel):
    customer_id: str
    erasure_id: str
    erased_at: datetime | None
    events_scrubbed: int
    identifiers_removed: int
    audit_shredded: bool


class AccessOut(BaseModel):
    """Everything profile holds about one customer (PDPA access request)."""

    customer: Json
    events: list[Json]
    consent_history: list[Json]
    merged_customer_ids: list[str]
    erased_at: datetime | None


def _settings_json(settings: profile_pb2.WorkspaceSettings) -> dict[str, Any]:
    out = to_json(settings)
    out["updated_at"] = out.get("updated_at")
    return out


@router.get("/v1/profile-settings", response_model=ProfileSettingsOut, responses=_ERRORS)
async def get_settings(
    principal: Annotated[Principal, Depends(require(Action.READ_PROFILE_SETTINGS))], state: State
) -> Any:
    response = await state.profile.GetWorkspaceSettings(
        profile_pb2.GetWorkspaceSettingsRequest(workspace_id=principal.workspace_id), timeout=state.timeout
    )
    return _settings_json(response.settings)


@router.put("/v1/profile-settings", response_model=ProfileSettingsOut, responses=_ERRORS)
async def put_settings(
    body: ProfileSettingsIn,
    principal: Annotated[Principal, Depends(require(Action.WRITE_PROFILE_SETTINGS))],
    state: State,
) -> Any:
    """Lifecycle thresholds of this workspace; they apply to every read from now on."""
    given = body.lifecycle.model_dump(exclude_none=True)
    response = await state.profile.SetWorkspaceSettings(
        profile_pb2.SetWorkspaceSettingsRequest(
            workspace_id=principal.workspace_id,
            settings=profile_pb2.WorkspaceSettings(lifecycle=profile_pb2.LifecycleThresholds(**given)),
            actor=principal.key_id,
        ),
        timeout=state.timeout,
    )
    return _settings_json(response.settings)


@router.post("/v1/segments", response_model=SegmentOut, status_code=201, responses=_ERRORS)
async def create_segment(
    body: SegmentIn,
    principal: Annotated[Principal, Depends(require(Action.WRITE_SEGMENTS))],
    state: State,
) -> Any:
    """A segment is a safe expression over features, evaluated live on every profile read."""
    response = await state.profile.CreateSegment(
        profile_pb2.CreateSegmentRequest(
            workspace_id=principal.workspace_id,
            segment=profile_pb2.Segment(name=body.name, expression=body.expression, description=body.description),
            actor=principal.key_id,
        ),
        timeout=state.timeout,
    )
    return to_json(response.segment)


@router.get("/v1/segments", response_model=SegmentsOut, responses=_ERRORS)
async def list_segments(
    principal: Annotated[Principal, Depends(require(Action.READ_SEGMENTS))], state: State
) -> Any:
    response = await state.profile.ListSegments(
        profile_pb2.ListSegmentsRequest(workspace_id=principal.workspace_id), timeout=state.timeout
    )
    return to_json(response)


@router.get("/v1/segments/{name}/count", response_model=SegmentCountOut, responses=_ERRORS)
async def count_segment(
    name: str, principal: Annotated[Principal, Depends(require(Action.READ_SEGMENTS))], state: State
) -> Any:
    response = await state.profile.CountSegment(
        profile_pb2.CountSegmentRequest(workspace_id=principal.workspace_id, name=name), timeout=state.timeout
    )
    return to_json(response)


@router.delete("/v1/segments/{name}", status_code=204, responses=_ERRORS)
async def delete_segment(
    name: str, principal: Annotated[Principal, Depends(require(Action.WRITE_SEGMENTS))], state: State
) -> None:
    await state.profile.DeleteSegment(
        profile_pb2.DeleteSegmentRequest(workspace_id=principal.workspace_id, name=name), timeout=state.timeout
    )


@router.get("/v1/privacy/access/{customer_id}", response_model=AccessOut, responses=_ERRORS)
async def privacy_access(
    customer_id: str,
    principal: Annotated[Principal, Depends(require(Action.PRIVACY_ACCESS))],
    state: State,
) -> Any:
    """Everything profile holds about a customer: profile, identifiers, traits, events, consents + history."""
    response = await state.profile.ExportCustomer(
        profile_pb2.ExportCustomerRequest(workspace_id=principal.workspace_id, customer_id=customer_id),
        timeout=state.timeout,
    )
    out = to_json(response)
    return {
        "customer": customer_json(response.profile),
        "events": out["events"],
        "consent_history": out["consent_history"],
        "merged_customer_ids": out["merged_customer_ids"],
        "erased_at": out["erased_at"],
    }


@router.post("/v1/privacy/erasure", response_model=ErasureOut, responses=_ERRORS)
async def privacy_erasure(
    body: ErasureIn,
    principal: Annotated[Principal, Depends(require(Action.PRIVACY_ERASURE))],
    state: State,
) -> Any:
    """Erases the customer's personal data in profile (anonymised aggregates stay) and has audit shred
    the customer's key; fails with 503 and changes nothing when audit is unreachable."""
    response = await state.profile.EraseCustomer(
        profile_pb2.EraseCustomerRequest(
            workspace_id=principal.workspace_id, customer_id=body.customer_id, actor=principal.key_id
        ),
        timeout=state.timeout,
    )
    return to_json(response)
