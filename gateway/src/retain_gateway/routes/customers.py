"""Customer 360, events, consent, next-best-actions and outcomes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from retain.decision.v1 import decision_pb2
from retain.profile.v1 import profile_pb2
from retain_kit.enums import channel_value, consent_status_value
from retain_kit.protoconv import to_timestamp

from retain_gateway.auth import require
from retain_gateway.convert import enum_value, to_json
from retain_gateway.domain.apikey import Principal
from retain_gateway.roles import Action
from retain_gateway.schemas import (
    ChannelName,
    ConsentsIn,
    ConsentsOut,
    CustomerOut,
    ErrorOut,
    EventsOut,
    NextBestActionsOut,
    OutcomeIn,
    OutcomeOut,
)
from retain_gateway.state import GatewayState, get_state

router = APIRouter(tags=["customers"])
State = Annotated[GatewayState, Depends(get_state)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (401, 403, 404, 422, 429, 503)
}


def customer_json(profile: profile_pb2.Profile) -> dict[str, Any]:
    out = to_json(profile)
    # The caller's workspace is implicit in its key.
    out.pop("workspace_id", None)
    return out


@router.get("/v1/customers/{customer_id}", response_model=CustomerOut, responses=_ERRORS)
async def get_customer(
    customer_id: str,
    principal: Annotated[Principal, Depends(require(Action.READ_CUSTOMER))],
    state: State,
) -> Any:
    """The unified profile; `customer_id` may be the `cus_` id or any identifier the customer is known by."""
    response = await state.profile.GetProfile(
        profile_pb2.GetProfileRequest(workspace_id=principal.workspace_id, customer_id=customer_id),
        timeout=state.timeout,
    )
    return customer_json(response.profile)


@router.get("/v1/customers/{customer_id}/events", response_model=EventsOut, responses=_ERRORS)
async def list_events(
    customer_id: str,
    principal: Annotated[Principal, Depends(require(Action.READ_EVENTS))],
    state: State,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str = "",
) -> Any:
    response = await state.profile.ListEvents(
        profile_pb2.ListEventsRequest(
            workspace_id=principal.workspace_id, customer_id=customer_id, page_size=limit, page_token=cursor
        ),
        timeout=state.timeout,
    )
    return {"events": [to_json(e) for e in response.events], "next_cursor": response.next_page_token}


@router.put("/v1/customers/{customer_id}/consents", response_model=ConsentsOut, responses=_ERRORS)
async def set_consents(
    customer_id: str,
    body: ConsentsIn,
    principal: Annotated[Principal, Depends(require(Action.WRITE_CONSENTS))],
    state: State,
) -> Any:
    """Record consent changes (PDPA: per channel and purpose, with source and lawful basis)."""
    changes = [
        profile_pb2.ConsentChange(
            channel=channel_value(c.channel),
            purpose=c.purpose,
            status=consent_status_value(c.status),
            source=c.source,
            lawful_basis=c.lawful_basis,
            policy_version=c.policy_version,
            occurred_at=to_timestamp(c.occurred_at),
        )
        for c in body.consents
    ]
    response = await state.profile.SetConsents(
        profile_pb2.SetConsentsRequest(
            workspace_id=principal.workspace_id,
            customer_id=customer_id,
            changes=changes,
            actor=principal.key_id,
        ),
        timeout=state.timeout,
    )
    return to_json(response)


@router.get(
    "/v1/customers/{customer_id}/next-best-actions", response_model=NextBestActionsOut, responses=_ERRORS
)
async def next_best_actions(
    customer_id: str,
    principal: Annotated[Principal, Depends(require(Action.GET_NEXT_BEST_ACTIONS))],
    state: State,
    placement: Annotated[str, Query(max_length=64)] = "",
    limit: Annotated[int, Query(ge=1, le=50)] = 3,
    channel: Annotated[list[ChannelName] | None, Query()] = None,
) -> Any:
    """Ranked actions with their score breakdown, plus every suppressed candidate and the rule why."""
    response = await state.decision.GetNextBestActions(
        decision_pb2.GetNextBestActionsRequest(
            workspace_id=principal.workspace_id,
            customer_id=customer_id,
            placement=placement,
            limit=limit,
            channels=[channel_value(c) for c in channel or ()],
        ),
        timeout=state.timeout,
    )
    return to_json(response)


@router.post("/v1/customers/{customer_id}/outcomes", response_model=OutcomeOut, responses=_ERRORS)
async def record_outcome(
    customer_id: str,
    body: OutcomeIn,
    principal: Annotated[Principal, Depends(require(Action.RECORD_OUTCOME))],
    state: State,
) -> Any:
    """Impressions, clicks, accepts and declines of an offer (they train the propensity models)."""
    response = await state.decision.RecordOutcome(
        decision_pb2.RecordOutcomeRequest(
            workspace_id=principal.workspace_id,
            customer_id=customer_id,
            offer_id=body.offer_id,
            outcome=enum_value(decision_pb2.Outcome.DESCRIPTOR, body.outcome),  # type: ignore[arg-type]
            decision_id=body.decision_id,
            occurred_at=to_timestamp(body.occurred_at),
        ),
        timeout=state.timeout,
    )
    return {"recorded": response.recorded}
