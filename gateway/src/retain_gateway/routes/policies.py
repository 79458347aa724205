"""Governance policy of the workspace: caps, quiet hours, holdouts, contact costs, offer rules.

Versioned by the decision service; every change is an audit record (RECORD_KIND_CONFIG).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from retain.decision.v1 import decision_pb2
from retain_kit.enums import channel_name, channel_value
from retain_kit.protoconv import from_timestamp

from retain_gateway.auth import require
from retain_gateway.domain.apikey import Principal
from retain_gateway.roles import Action
from retain_gateway.schemas import ChannelName, ErrorOut
from retain_gateway.state import GatewayState, get_state

router = APIRouter(tags=["policies"])
State = Annotated[GatewayState, Depends(get_state)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (401, 403, 404, 409, 422, 429, 503)
}


class CapLimitIO(BaseModel):
    """Messages allowed per local day / ISO week; null means no cap on that window."""

    per_day: int | None = Field(None, ge=0)
    per_week: int | None = Field(None, ge=0)


class QuietHoursIO(BaseModel):
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", examples=["21:00"])
    end: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", examples=["08:00"])
    mode: Literal["hold", "drop"] = "hold"


class OfferRuleIO(BaseModel):
    per_day: int | None = Field(None, ge=0)
    per_week: int | None = Field(None, ge=0)
    decline_limit: int = Field(0, ge=0)
    decline_window_days: int = Field(30, ge=1)


class PolicyIn(BaseModel):
    channel_caps: dict[ChannelName, CapLimitIO] = Field(default_factory=dict)
    global_cap: CapLimitIO = Field(default_factory=CapLimitIO)
    quiet_hours: QuietHoursIO | None = None
    control_group_share: float = Field(0.0, ge=0.0, lt=1.0)
    journey_holdouts: dict[str, float] = Field(default_factory=dict)
    contact_costs: dict[ChannelName, float] = Field(default_factory=dict)
    offer_rules: dict[str, OfferRuleIO] = Field(default_factory=dict)
    default_time_zone: str = ""
    contact_slot_minutes: int | None = Field(None, ge=0)
    arbitration_ms: int | None = Field(None, ge=0)
    holdout_salt: str = ""
    load_weight: float | None = Field(None, ge=0.0)
    # Optimistic concurrency: apply only if the current version is this one.
    expected_version: int = Field(0, ge=0, le=2**31 - 1)


class PolicyOut(PolicyIn):
    version: int
    updated_by: str
    updated_at: datetime | None


def _opt(msg: Any, name: str) -> Any:
    return getattr(msg, name) if msg.HasField(name) else None


def _cap_out(msg: decision_pb2.CapLimit) -> CapLimitIO:
    return CapLimitIO(per_day=_opt(msg, "per_day"), per_week=_opt(msg, "per_week"))


def policy_out(p: decision_pb2.Policy) -> dict[str, Any]:
    return {
        "version": p.version,
        "channel_caps": {channel_name(c.channel): _cap_out(c.limit).model_dump() for c in p.channel_caps},
        "global_cap": _cap_out(p.global_cap).model_dump(),
        "quiet_hours": (
            {"start": p.quiet_hours.start, "end": p.quiet_hours.end, "mode": p.quiet_hours.mode}
            if p.HasField("quiet_hours") else None
        ),
        "control_group_share": p.control_group_share,
        "journey_holdouts": {h.journey_id: h.share for h in p.journey_holdouts},
        "contact_costs": {channel_name(c.channel): c.cost for c in p.contact_costs},
        "offer_rules": {
            r.offer_id: {"per_day": _opt(r, "per_day"), "per_week": _opt(r, "per_week"),
                         "decline_limit": r.decline_limit, "decline_window_days": r.decline_window_days}
            for r in p.offer_rules
        },
        "default_time_zone": p.default_time_zone,
        "contact_slot_minutes": p.contact_slot_minutes,
        "arbitration_ms": p.arbitration_ms,
        "holdout_salt": p.holdout_salt,
        "load_weight": p.load_weight,
        "expected_version": 0,
        "updated_by": p.updated_by,
        "updated_at": from_timestamp(p.updated_at) if p.HasField("updated_at") else None,
    }


def _cap_in(limit: CapLimitIO) -> decision_pb2.CapLimit:
    return decision_pb2.CapLimit(per_day=limit.per_day, per_week=limit.per_week)


def policy_in(body: PolicyIn) -> decision_pb2.Policy:
    return decision_pb2.Policy(
        channel_caps=[
            decision_pb2.ChannelCap(channel=channel_value(c), limit=_cap_in(v)) for c, v in body.channel_caps.items()
        ],
        global_cap=_cap_in(body.global_cap),
        quiet_hours=(
            decision_pb2.QuietHours(start=body.quiet_hours.start, end=body.quiet_hours.end, mode=body.quiet_hours.mode)
            if body.quiet_hours else None
        ),
        control_group_share=body.control_group_share,
        journey_holdouts=[decision_pb2.JourneyHoldout(journey_id=j, share=s) for j, s in body.journey_holdouts.items()],
        contact_costs=[
            decision_pb2.ChannelCost(channel=channel_value(c), cost=v) for c, v in body.contact_costs.items()
        ],
        offer_rules=[
            decision_pb2.OfferRule(
                offer_id=o, per_day=r.per_day, per_week=r.per_week, decline_limit=r.decline_limit,
                decline_window_days=r.decline_window_days,
            )
            for o, r in body.offer_rules.items()
        ],
        default_time_zone=body.default_time_zone,
        contact_slot_minutes=body.contact_slot_minutes,
        arbitration_ms=body.arbitration_ms,
        holdout_salt=body.holdout_salt,
        load_weight=body.load_weight,
    )


@router.get("/v1/policies", response_model=PolicyOut, responses=_ERRORS)
async def get_policy(
    principal: Annotated[Principal, Depends(require(Action.READ_POLICIES))],
    state: State,
    version: Annotated[int, Query(ge=0, le=2**31 - 1, description="0 = the current version")] = 0,
) -> Any:
    response = await state.decision.GetPolicy(
        decision_pb2.GetPolicyRequest(workspace_id=principal.workspace_id, version=version), timeout=state.timeout
    )
    return policy_out(response.policy)


@router.put("/v1/policies", response_model=PolicyOut, responses=_ERRORS)
async def set_policy(
    body: PolicyIn,
    principal: Annotated[Principal, Depends(require(Action.WRITE_POLICIES))],
    state: State,
) -> Any:
    """Replace the policy; the stored result gets the next version and an audit record."""
    response = await state.decision.SetPolicy(
        decision_pb2.SetPolicyRequest(
            workspace_id=principal.workspace_id, policy=policy_in(body), actor=principal.key_id,
            expected_version=body.expected_version,
        ),
        timeout=state.timeout,
    )
    return policy_out(response.policy)
