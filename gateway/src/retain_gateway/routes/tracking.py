"""Segment-compatible ingestion: /v1/track, /v1/identify, /v1/page, /v1/alias, /v1/batch."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from retain.profile.v1 import profile_pb2
from retain_kit.protoconv import utcnow

from retain_gateway.auth import require
from retain_gateway.domain.apikey import Principal
from retain_gateway.errors import ApiError, error_body
from retain_gateway.roles import Action
from retain_gateway.schemas import (
    AliasIn,
    AliasOut,
    BatchIn,
    BatchOut,
    ErrorOut,
    IdentifyIn,
    IdentifyOut,
    IngestOut,
    ItemResult,
    PageIn,
    ScreenIn,
    SegmentMessage,
    TrackIn,
)
from retain_gateway.segment import ItemError, client_field, identity_problem, parse_item, to_event
from retain_gateway.state import GatewayState, get_state

router = APIRouter(tags=["tracking"])
Ingest = Annotated[Principal, Depends(require(Action.INGEST_EVENTS))]
State = Annotated[GatewayState, Depends(get_state)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 413: {"model": ErrorOut},
    422: {"model": ErrorOut}, 429: {"model": ErrorOut}, 503: {"model": ErrorOut},
}
_STATUS = {
    profile_pb2.INGEST_STATUS_ACCEPTED: "accepted",
    profile_pb2.INGEST_STATUS_DUPLICATE: "duplicate",
    profile_pb2.INGEST_STATUS_REJECTED: "rejected",
}


async def limit_body(request: Request, state: State) -> None:
    limit = state.settings.max_batch_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body is larger than {limit} bytes")
    if len(await request.body()) > limit:
        raise ApiError(413, f"request body is larger than {limit} bytes")


Sized = Annotated[None, Depends(limit_body)]


def _require_identity(msg: SegmentMessage) -> None:
    if (problem := identity_problem(msg)) is not None:
        raise ApiError(422, problem.message, field=problem.field)


async def _ingest_one(state: GatewayState, principal: Principal, msg: SegmentMessage) -> IngestOut:
    _require_identity(msg)
    event = to_event(msg, received_at=utcnow())
    response = await state.profile.IngestEvents(
        profile_pb2.IngestEventsRequest(workspace_id=principal.workspace_id, events=[event]),
        timeout=state.timeout,
    )
    result = response.results[0]
    if result.status == profile_pb2.INGEST_STATUS_REJECTED:
        raise ApiError(422, result.error or "event rejected", field=client_field(result.field))
    status = "duplicate" if result.status == profile_pb2.INGEST_STATUS_DUPLICATE else "accepted"
    return IngestOut(
        success=True,
        message_id=result.message_id or event.message_id,
        status=status,
        customer_id=result.customer_id,
    )


@router.post("/v1/track", response_model=IngestOut, responses=_ERRORS, summary="Record an event")
async def track(body: TrackIn, principal: Ingest, state: State, _: Sized) -> IngestOut:
    return await _ingest_one(state, principal, body)


@router.post("/v1/page", response_model=IngestOut, responses=_ERRORS, summary="Record a page view")
async def page(body: PageIn, principal: Ingest, state: State, _: Sized) -> IngestOut:
    return await _ingest_one(state, principal, body)


@router.post("/v1/screen", response_model=IngestOut, responses=_ERRORS, summary="Record a screen view")
async def screen(body: ScreenIn, principal: Ingest, state: State, _: Sized) -> IngestOut:
    return await _ingest_one(state, principal, body)


@router.post("/v1/identify", response_model=IdentifyOut, responses=_ERRORS, summary="Identify a customer")
async def identify(body: IdentifyIn, principal: Ingest, state: State, _: Sized) -> IdentifyOut:
    # Through the same ingestion as /v1/batch, so traits *and* context (device tokens) are kept, and a
    # replayed messageId changes nothing.
    result = await _ingest_one(state, principal, body)
    return IdentifyOut(success=True, message_id=result.message_id, customer_id=result.customer_id)


@router.post("/v1/alias", response_model=AliasOut, responses=_ERRORS, summary="Link two identities")
async def alias(body: AliasIn, principal: Ingest, state: State, _: Sized) -> AliasOut:
    _require_identity(body)
    message_id = to_event(body, received_at=utcnow()).message_id
    response = await state.profile.Alias(
        profile_pb2.AliasRequest(
            workspace_id=principal.workspace_id,
            previous_id=body.previous_id,
            user_id=body.user_id or "",
            message_id=message_id,
        ),
        timeout=state.timeout,
    )
    return AliasOut(
        success=True,
        message_id=message_id,
        customer_id=response.customer_id,
        merged_customer_ids=list(response.merged_customer_ids),
    )


@router.post(
    "/v1/batch",
    response_model=BatchOut,
    responses={**_ERRORS, 400: {"model": BatchOut, "description": "No item in the batch was valid"}},
    summary="Record many messages; each item gets its own result",
)
async def batch(body: BatchIn, principal: Ingest, state: State, _: Sized) -> Any:
    limit = state.settings.max_batch_items
    if len(body.batch) > limit:
        raise ApiError(413, f"a batch holds at most {limit} items", field="batch")
    received_at = utcnow()
    results: dict[int, ItemResult] = {}
    events: list[profile_pb2.Event] = []
    positions: list[int] = []
    for index, raw in enumerate(body.batch):
        try:
            msg = parse_item(raw)
        except ItemError as exc:
            field = f"batch[{index}]" + (f".{exc.field}" if exc.field else "")
            message_id = str(raw.get("messageId") or "") if isinstance(raw, dict) else ""
            results[index] = ItemResult(
                index=index, message_id=message_id, status="rejected", field=field, error=exc.message
            )
            continue
        events.append(to_event(msg, received_at=received_at, batch_context=body.context))
        positions.append(index)
    if events:
        response = await state.profile.IngestEvents(
            profile_pb2.IngestEventsRequest(workspace_id=principal.workspace_id, events=events),
            timeout=state.timeout,
        )
        for result in response.results:
            index = positions[result.index]
            rejected = result.status == profile_pb2.INGEST_STATUS_REJECTED
            results[index] = ItemResult(
                index=index,
                message_id=result.message_id or events[result.index].message_id,
                status=_STATUS.get(result.status, "rejected"),
                customer_id=result.customer_id,
                field=f"batch[{index}].{client_field(result.field)}" if rejected and result.field else "",
                error=result.error,
            )
    ordered = [results[i] for i in sorted(results)]
    counts = {s: sum(1 for r in ordered if r.status == s) for s in ("accepted", "duplicate", "rejected")}
    out = BatchOut(
        success=counts["accepted"] + counts["duplicate"] > 0,
        accepted=counts["accepted"],
        duplicates=counts["duplicate"],
        rejected=counts["rejected"],
        results=ordered,
    )
    if not out.success:
        first = next((r for r in ordered if r.field), None)
        detail = "no valid message in the batch" if ordered else "the batch is empty"
        body_out = error_body(
            "invalid_argument", detail, first.field if first else "batch", **out.model_dump()
        )
        return JSONResponse(body_out, 400)
    return out
