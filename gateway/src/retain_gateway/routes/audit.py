"""Read-only access to the communication and decision log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Depends, Query
from retain.audit.v1 import audit_pb2
from retain.common.v1 import common_pb2
from retain.profile.v1 import profile_pb2
from retain_kit.enums import channel_value
from retain_kit.protoconv import to_timestamp

from retain_gateway.auth import require
from retain_gateway.convert import enum_value, to_json
from retain_gateway.domain.apikey import Principal
from retain_gateway.roles import Action
from retain_gateway.schemas import AuditRecordsOut, ChannelName, ErrorOut, RecordKindName, VerifyOut
from retain_gateway.state import GatewayState, get_state

router = APIRouter(tags=["audit"])
State = Annotated[GatewayState, Depends(get_state)]
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (401, 403, 422, 429, 503)}


async def resolve_customer(state: GatewayState, workspace_id: str, customer_id: str) -> str:
    """Audit stores internal ids; an identifier is resolved through profile, or kept as given if unknown."""
    if not customer_id or customer_id.startswith("cus_"):
        return customer_id
    try:
        response = await state.profile.GetProfile(
            profile_pb2.GetProfileRequest(workspace_id=workspace_id, customer_id=customer_id),
            timeout=state.timeout,
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return customer_id
        raise
    return response.profile.customer_id or customer_id


@router.get("/v1/audit/records", response_model=AuditRecordsOut, responses=_ERRORS)
async def list_records(
    principal: Annotated[Principal, Depends(require(Action.READ_AUDIT))],
    state: State,
    customer_id: Annotated[str, Query(max_length=256)] = "",
    kind: RecordKindName | None = None,
    channel: ChannelName | None = None,
    decision_id: Annotated[str, Query(max_length=64)] = "",
    journey_id: Annotated[str, Query(max_length=64)] = "",
    offer_id: Annotated[str, Query(max_length=64)] = "",
    outcome: Annotated[str, Query(max_length=32)] = "",
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str = "",
) -> Any:
    """Records of this key's workspace, oldest first; pass `next_cursor` back as `cursor` for more."""
    request = audit_pb2.ListRecordsRequest(
        workspace_id=principal.workspace_id,
        customer_id=await resolve_customer(state, principal.workspace_id, customer_id),
        kind=enum_value(audit_pb2.RecordKind.DESCRIPTOR, kind or ""),  # type: ignore[arg-type]
        channel=channel_value(channel) if channel else common_pb2.CHANNEL_UNSPECIFIED,
        decision_id=decision_id,
        journey_id=journey_id,
        offer_id=offer_id,
        outcome=outcome,
        since=to_timestamp(since),
        until=to_timestamp(until),
        page_size=limit,
        page_token=cursor,
    )
    response = await state.audit.ListRecords(request, timeout=state.timeout)
    records = []
    for record in response.records:
        out = to_json(record)
        out.pop("workspace_id", None)
        records.append(out)
    return {"records": records, "next_cursor": response.next_page_token}


@router.get("/v1/audit/verify", response_model=VerifyOut, responses=_ERRORS)
async def verify(
    principal: Annotated[Principal, Depends(require(Action.VERIFY_AUDIT))],
    state: State,
) -> Any:
    """Recompute this workspace's hash chain end to end."""
    response = await state.audit.Verify(
        audit_pb2.VerifyRequest(workspace_id=principal.workspace_id),
        # Verification reads the whole chain; it gets more time than an ordinary call.
        timeout=max(state.timeout, 30.0),
    )
    return to_json(response)
