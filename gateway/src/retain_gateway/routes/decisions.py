"""Decision pipeline entry points for contact centres and operators, and the offer catalogue."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from retain.decision.v1 import decision_pb2
from retain_kit.enums import channel_value
from retain_kit.protoconv import to_struct, to_timestamp

from retain_gateway.auth import require
from retain_gateway.convert import enum_value, to_json
from retain_gateway.domain.apikey import Principal
from retain_gateway.errors import ApiError
from retain_gateway.roles import Action
from retain_gateway.schemas import (
    DecisionIn,
    DecisionOut,
    ErrorOut,
    MessageIn,
    MessageOut,
    OfferIn,
    OfferOut,
    OffersOut,
)
from retain_gateway.state import GatewayState, get_state

router = APIRouter(tags=["decisions"])
State = Annotated[GatewayState, Depends(get_state)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (401, 403, 404, 409, 422, 429, 503)
}


@router.post("/v1/decisions", response_model=DecisionOut, responses=_ERRORS)
async def decide(
    body: DecisionIn,
    principal: Annotated[Principal, Depends(require(Action.CREATE_DECISION))],
    state: State,
) -> Any:
    """Run the decision pipeline now (contact-centre request or trigger evaluation); with
    `dispatch`, the top action is sent through the same governance as any other send."""
    if body.dispatch:
        if body.placement:
            raise ApiError(422, "dispatch sends a message; use channels, not placement", field="placement")
        if not body.idempotency_key:
            raise ApiError(422, "idempotency_key is required with dispatch", field="idempotency_key")
        evaluated = await state.decision.EvaluateTrigger(
            decision_pb2.EvaluateTriggerRequest(
                workspace_id=principal.workspace_id,
                customer_id=body.customer_id,
                channels=[channel_value(c) for c in body.channels],
                limit=body.limit,
                trigger="journey" if body.journey_id else "trigger",
                journey_id=body.journey_id,
                dispatch=True,
                idempotency_key=body.idempotency_key,
                actor=principal.key_id,
            ),
            timeout=state.timeout,
        )
        out = to_json(evaluated.decision)
        sent = to_json(evaluated.send)
        sent["rule"] = evaluated.send.suppressed[0].rule if evaluated.send.suppressed else ""
        out["send"] = sent
        return out
    response = await state.decision.GetNextBestActions(
        decision_pb2.GetNextBestActionsRequest(
            workspace_id=principal.workspace_id,
            customer_id=body.customer_id,
            placement=body.placement,
            limit=body.limit,
            channels=[channel_value(c) for c in body.channels],
        ),
        timeout=state.timeout,
    )
    return to_json(response)


@router.post(
    "/v1/messages",
    status_code=202,
    response_model=MessageOut,
    responses={**_ERRORS, 200: {"model": MessageOut, "description": "Not sent: suppressed or failed"}},
)
async def send_message(
    body: MessageIn,
    principal: Annotated[Principal, Depends(require(Action.SEND_MESSAGE))],
    state: State,
) -> Any:
    """Send one offer through governance; a suppressed send is an answer (200), not an error."""
    response = await state.decision.SendMessage(
        decision_pb2.SendMessageRequest(
            workspace_id=principal.workspace_id,
            customer_id=body.customer_id,
            channel=channel_value(body.channel),
            offer_id=body.offer_id,
            purpose=body.purpose,
            idempotency_key=body.idempotency_key,
            actor=principal.key_id,
            locale=body.locale,
            variables=to_struct(body.variables),
        ),
        timeout=state.timeout,
    )
    out = to_json(response)
    out["rule"] = response.suppressed[0].rule if response.suppressed else ""
    accepted = response.status in (
        decision_pb2.SEND_STATUS_SENT, decision_pb2.SEND_STATUS_QUEUED, decision_pb2.SEND_STATUS_DUPLICATE
    )
    if accepted:
        return out
    return JSONResponse(MessageOut.model_validate(out).model_dump(mode="json"), 200)


@router.get("/v1/offers", response_model=OffersOut, responses=_ERRORS)
async def list_offers(
    principal: Annotated[Principal, Depends(require(Action.READ_OFFERS))],
    state: State,
    include_inactive: Annotated[bool, Query()] = False,
) -> Any:
    response = await state.decision.ListOffers(
        decision_pb2.ListOffersRequest(workspace_id=principal.workspace_id, include_inactive=include_inactive),
        timeout=state.timeout,
    )
    return to_json(response)


@router.post("/v1/offers", response_model=OfferOut, responses=_ERRORS)
async def upsert_offer(
    body: OfferIn,
    principal: Annotated[Principal, Depends(require(Action.WRITE_OFFERS))],
    state: State,
) -> Any:
    """Create or update an offer; every change gets a new version."""
    offer = decision_pb2.Offer(
        offer_id=body.offer_id,
        name=body.name,
        play_type=enum_value(decision_pb2.PlayType.DESCRIPTOR, body.play_type),  # type: ignore[arg-type]
        channels=[channel_value(c) for c in body.channels],
        placements=body.placements,
        purpose=body.purpose,
        eligibility=body.eligibility,
        value=body.value,
        cost=body.cost,
        lever=body.lever,
        conflict_group=body.conflict_group,
        templates=[
            decision_pb2.Template(
                channel=channel_value(t.channel), locale=t.locale, subject=t.subject, body=t.body
            )
            for t in body.templates
        ],
        valid_from=to_timestamp(body.valid_from),
        valid_until=to_timestamp(body.valid_until),
        active=body.active,
        prior_propensity=body.prior_propensity,
    )
    response = await state.decision.UpsertOffer(
        decision_pb2.UpsertOfferRequest(workspace_id=principal.workspace_id, offer=offer, actor=principal.key_id),
        timeout=state.timeout,
    )
    return to_json(response.offer)
