"""The communication and decision log: query, export, verify, checkpoints and the signing key."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

import grpc
from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from retain.audit.v1 import audit_pb2
from retain.common.v1 import common_pb2
from retain.profile.v1 import profile_pb2
from retain_kit.enums import channel_value
from retain_kit.protoconv import to_timestamp

from retain_gateway.auth import require
from retain_gateway.convert import enum_value, to_json
from retain_gateway.domain.apikey import Principal
from retain_gateway.errors import ApiError
from retain_gateway.roles import Action
from retain_gateway.schemas import AuditRecordOut, ChannelName, ErrorOut, RecordKindName, VerifyOut
from retain_gateway.state import GatewayState, get_state

router = APIRouter(tags=["audit"])
State = Annotated[GatewayState, Depends(get_state)]
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (401, 403, 422, 429, 503)}
# Verification and export read the whole chain; they get more time than an ordinary call.
_LONG_TIMEOUT = 60.0
_EXPORT_PAGE = 500
CSV_COLUMNS = (
    "seq", "record_id", "kind", "customer_id", "decision_id", "message_id", "channel", "journey_id", "offer_id",
    "outcome", "actor", "occurred_at", "recorded_at", "erased", "payload", "prev_hash", "hash",
)


class AuditRecordRead(AuditRecordOut):
    # Personal fields of the payload read "[erased]" once the customer's key was destroyed.
    erased: bool = False


class AuditRecordPage(BaseModel):
    records: list[AuditRecordRead]
    next_cursor: str = ""


class AuditVerifyOut(VerifyOut):
    checkpoints_checked: int = 0


class CheckpointOut(BaseModel):
    seq: int
    head_hash: str
    signed_at: datetime | None
    signature: str
    key_id: str


class CheckpointPage(BaseModel):
    checkpoints: list[CheckpointOut]
    next_cursor: str = ""


class CreatedCheckpointOut(BaseModel):
    # Null when the workspace has no records yet.
    checkpoint: CheckpointOut | None


class PublicKeyOut(BaseModel):
    key_id: str
    algorithm: str
    public_key_pem: str
    statement_format: str = "retain-audit-checkpoint/v1\\n{workspace_id}\\n{seq}\\n{head_hash}\\n{signed_at}"


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
        if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            return customer_id
        raise
    return response.profile.customer_id or customer_id


def _check_range(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and until < since:
        raise ApiError(422, "until must not be before since", field="until")


async def _list_request(
    state: GatewayState,
    principal: Principal,
    *,
    customer_id: str,
    kind: str | None,
    channel: str | None,
    decision_id: str,
    journey_id: str,
    offer_id: str,
    outcome: str,
    since: datetime | None,
    until: datetime | None,
) -> audit_pb2.ListRecordsRequest:
    _check_range(since, until)
    return audit_pb2.ListRecordsRequest(
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
    )


def record_json(record: audit_pb2.AuditRecord) -> dict[str, Any]:
    out = to_json(record)
    # The caller's workspace is implicit in its key.
    out.pop("workspace_id", None)
    return out


CustomerQ = Annotated[str, Query(max_length=256, description="`cus_` id or any identifier of the customer")]
IdQ = Annotated[str, Query(max_length=64)]
OutcomeQ = Annotated[str, Query(max_length=32)]


@router.get("/v1/audit/records", response_model=AuditRecordPage, responses=_ERRORS)
async def list_records(
    principal: Annotated[Principal, Depends(require(Action.READ_AUDIT))],
    state: State,
    customer_id: CustomerQ = "",
    kind: RecordKindName | None = None,
    channel: ChannelName | None = None,
    decision_id: IdQ = "",
    journey_id: IdQ = "",
    offer_id: IdQ = "",
    outcome: OutcomeQ = "",
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str, Query(max_length=32, pattern=r"^[0-9]*$")] = "",
) -> Any:
    """Records of this key's workspace, oldest first; pass `next_cursor` back as `cursor` for more."""
    request = await _list_request(
        state, principal, customer_id=customer_id, kind=kind, channel=channel, decision_id=decision_id,
        journey_id=journey_id, offer_id=offer_id, outcome=outcome, since=since, until=until,
    )
    request.page_size = limit
    request.page_token = cursor
    response = await state.audit.ListRecords(request, timeout=state.timeout)
    return {"records": [record_json(r) for r in response.records], "next_cursor": response.next_page_token}


def _csv_line(row: dict[str, Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(row.get(c, "") for c in CSV_COLUMNS)
    return buffer.getvalue()


def _jsonable(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in record.items()}


@router.get(
    "/v1/audit/export",
    responses={
        **_ERRORS,
        200: {"content": {"application/x-ndjson": {}, "text/csv": {}}, "description": "One record per line"},
    },
    response_class=StreamingResponse,
)
async def export_records(
    principal: Annotated[Principal, Depends(require(Action.READ_AUDIT))],
    state: State,
    format: Literal["jsonl", "csv"] = "jsonl",
    since: datetime | None = None,
    until: datetime | None = None,
    customer_id: CustomerQ = "",
    kind: RecordKindName | None = None,
    channel: ChannelName | None = None,
    decision_id: IdQ = "",
    journey_id: IdQ = "",
    offer_id: IdQ = "",
    outcome: OutcomeQ = "",
) -> StreamingResponse:
    """Streams every matching record (JSON Lines or CSV), paging through the log as the client reads."""
    request = await _list_request(
        state, principal, customer_id=customer_id, kind=kind, channel=channel, decision_id=decision_id,
        journey_id=journey_id, offer_id=offer_id, outcome=outcome, since=since, until=until,
    )
    request.page_size = _EXPORT_PAGE
    # Fail before the 200 goes out if audit is unreachable; later pages stream from there.
    first = await state.audit.ListRecords(request, timeout=_LONG_TIMEOUT)

    async def lines() -> AsyncIterator[str]:
        if format == "csv":
            yield _csv_line({c: c for c in CSV_COLUMNS})
        page = first
        while True:
            for record in page.records:
                out = _jsonable(record_json(record))
                if format == "csv":
                    out["payload"] = json.dumps(out["payload"], ensure_ascii=False, sort_keys=True)
                    yield _csv_line(out)
                else:
                    yield json.dumps(out, ensure_ascii=False) + "\n"
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token
            page = await state.audit.ListRecords(request, timeout=_LONG_TIMEOUT)

    media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
    filename = f"audit-{principal.workspace_id}.{format}"
    return StreamingResponse(
        lines(), media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )


@router.get("/v1/audit/verify", response_model=AuditVerifyOut, responses=_ERRORS)
async def verify(
    principal: Annotated[Principal, Depends(require(Action.VERIFY_AUDIT))],
    state: State,
) -> Any:
    """Recompute this workspace's hash chain end to end and check every signed checkpoint against it."""
    response = await state.audit.Verify(
        audit_pb2.VerifyRequest(workspace_id=principal.workspace_id), timeout=max(state.timeout, _LONG_TIMEOUT)
    )
    return to_json(response)


def checkpoint_json(checkpoint: audit_pb2.Checkpoint) -> dict[str, Any]:
    out = to_json(checkpoint)
    out.pop("workspace_id", None)
    return out


@router.get("/v1/audit/checkpoints", response_model=CheckpointPage, responses=_ERRORS)
async def list_checkpoints(
    principal: Annotated[Principal, Depends(require(Action.READ_AUDIT))],
    state: State,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str, Query(max_length=32, pattern=r"^[0-9]*$")] = "",
) -> Any:
    """Signed checkpoints of this workspace's chain, oldest first."""
    response = await state.audit.ListCheckpoints(
        audit_pb2.ListCheckpointsRequest(workspace_id=principal.workspace_id, page_size=limit, page_token=cursor),
        timeout=state.timeout,
    )
    return {
        "checkpoints": [checkpoint_json(c) for c in response.checkpoints],
        "next_cursor": response.next_page_token,
    }


@router.post("/v1/audit/checkpoints", response_model=CreatedCheckpointOut, responses=_ERRORS)
async def create_checkpoint(
    principal: Annotated[Principal, Depends(require(Action.CREATE_AUDIT_CHECKPOINT))],
    state: State,
) -> Any:
    """Sign the current head of this workspace's chain now."""
    response = await state.audit.CreateCheckpoint(
        audit_pb2.CreateCheckpointRequest(workspace_id=principal.workspace_id), timeout=state.timeout
    )
    return {"checkpoint": checkpoint_json(response.checkpoint) if response.HasField("checkpoint") else None}


@router.get("/v1/audit/public-key", response_model=PublicKeyOut, responses=_ERRORS)
async def public_key(
    principal: Annotated[Principal, Depends(require(Action.READ_AUDIT))],
    state: State,
) -> Any:
    """The Ed25519 key (PEM) that signs checkpoints, and the exact statement it signs."""
    response = await state.audit.GetPublicKey(audit_pb2.GetPublicKeyRequest(), timeout=state.timeout)
    return to_json(response)
