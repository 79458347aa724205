"""gRPC servicer: proto <-> domain translation only."""

from __future__ import annotations

import json
from typing import Any

import grpc
from retain.audit.v1 import audit_pb2, audit_pb2_grpc
from retain.common.v1 import common_pb2
from retain_kit.enums import channel_name, channel_value
from retain_kit.errors import InvalidArgument
from retain_kit.protoconv import from_struct, from_timestamp, to_struct, to_timestamp

from retain_audit.domain.checkpoint import ALGORITHM, Checkpoint, public_pem
from retain_audit.repository import NewRecord, RecordFilter
from retain_audit.service import AuditLog, ReadRecord

Context = grpc.aio.ServicerContext[Any, Any]


def kind_name(value: audit_pb2.RecordKind.ValueType) -> str:
    return audit_pb2.RecordKind.Name(value).removeprefix("RECORD_KIND_").lower() if value else ""


def kind_value(name: str) -> audit_pb2.RecordKind.ValueType:
    return audit_pb2.RecordKind.Value("RECORD_KIND_" + name.upper())


def _kind(value: int, field: str) -> str:
    if value and value not in audit_pb2.RecordKind.values():
        raise InvalidArgument(f"unknown record kind {value}", field=field)
    return kind_name(value)  # type: ignore[arg-type]


def _channel(value: int, field: str) -> str:
    if value and value not in common_pb2.Channel.values():
        raise InvalidArgument(f"unknown channel {value}", field=field)
    return channel_name(value)


def record_to_proto(read: ReadRecord) -> audit_pb2.AuditRecord:
    row = read.row
    return audit_pb2.AuditRecord(
        record_id=row.record_id,
        workspace_id=row.workspace_id,
        seq=row.seq,
        kind=kind_value(row.kind),
        customer_id=row.customer_id,
        decision_id=row.decision_id,
        message_id=row.message_id,
        channel=channel_value(row.channel) if row.channel else common_pb2.CHANNEL_UNSPECIFIED,
        journey_id=row.journey_id,
        offer_id=row.offer_id,
        outcome=row.outcome,
        actor=row.actor,
        payload=to_struct(read.payload),
        occurred_at=to_timestamp(row.occurred_at),
        recorded_at=to_timestamp(row.recorded_at),
        prev_hash=row.prev_hash,
        hash=row.hash,
        erased=read.erased,
    )


def receipt_to_proto(read: ReadRecord) -> audit_pb2.AuditRecord:
    row = read.row
    return audit_pb2.AuditRecord(
        record_id=row.record_id, workspace_id=row.workspace_id, seq=row.seq, prev_hash=row.prev_hash, hash=row.hash
    )


def checkpoint_to_proto(cp: Checkpoint) -> audit_pb2.Checkpoint:
    return audit_pb2.Checkpoint(
        workspace_id=cp.workspace_id,
        seq=cp.seq,
        head_hash=cp.head_hash,
        signed_at=to_timestamp(cp.signed_at),
        signature=cp.signature,
        key_id=cp.key_id,
    )


def _payload(r: audit_pb2.RecordInput, field: str) -> dict[str, Any]:
    if not r.payload_json:
        return from_struct(r.payload) if r.HasField("payload") else {}
    if r.HasField("payload"):
        raise InvalidArgument("give payload or payload_json, not both", field=f"{field}.payload_json")
    try:
        payload = json.loads(r.payload_json)
    except ValueError as exc:
        raise InvalidArgument(f"payload_json is not JSON: {exc}", field=f"{field}.payload_json") from exc
    if not isinstance(payload, dict):
        raise InvalidArgument("payload_json must be a JSON object", field=f"{field}.payload_json")
    return payload


def new_record(r: audit_pb2.RecordInput, field: str) -> NewRecord:
    return NewRecord(
        kind=_kind(r.kind, f"{field}.kind"),
        customer_id=r.customer_id,
        decision_id=r.decision_id,
        message_id=r.message_id,
        channel=_channel(r.channel, f"{field}.channel"),
        journey_id=r.journey_id,
        offer_id=r.offer_id,
        outcome=r.outcome,
        actor=r.actor,
        payload=_payload(r, field),
        occurred_at=from_timestamp(r.occurred_at) if r.HasField("occurred_at") else None,
        idempotency_key=r.idempotency_key,
    )


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, log: AuditLog) -> None:
        self.log = log

    async def Append(self, request: audit_pb2.AppendRequest, context: Context) -> audit_pb2.AppendResponse:
        row = await self.log.append(request.workspace_id, new_record(request.record, "record"))
        return audit_pb2.AppendResponse(record=record_to_proto(row))

    async def AppendBatch(
        self, request: audit_pb2.AppendBatchRequest, context: Context
    ) -> audit_pb2.AppendBatchResponse:
        records = [new_record(r, f"records[{i}]") for i, r in enumerate(request.records)]
        rows = await self.log.append_batch(request.workspace_id, records)
        if request.receipts_only:
            return audit_pb2.AppendBatchResponse(records=[receipt_to_proto(r) for r in rows])
        return audit_pb2.AppendBatchResponse(records=[record_to_proto(r) for r in rows])

    async def ListRecords(
        self, request: audit_pb2.ListRecordsRequest, context: Context
    ) -> audit_pb2.ListRecordsResponse:
        flt = RecordFilter(
            workspace_id=request.workspace_id,
            customer_id=request.customer_id,
            kind=_kind(request.kind, "kind"),
            channel=_channel(request.channel, "channel"),
            decision_id=request.decision_id,
            journey_id=request.journey_id,
            offer_id=request.offer_id,
            outcome=request.outcome,
            since=from_timestamp(request.since) if request.HasField("since") else None,
            until=from_timestamp(request.until) if request.HasField("until") else None,
        )
        rows, token = await self.log.list(flt, page_size=request.page_size, page_token=request.page_token)
        return audit_pb2.ListRecordsResponse(records=[record_to_proto(r) for r in rows], next_page_token=token)

    async def Verify(self, request: audit_pb2.VerifyRequest, context: Context) -> audit_pb2.VerifyResponse:
        result = await self.log.verify(request.workspace_id)
        return audit_pb2.VerifyResponse(
            ok=result.ok,
            records_checked=result.checked,
            first_broken_seq=result.first_broken_seq,
            detail=result.detail,
            head_hash=result.head_hash,
            checkpoints_checked=result.checkpoints_checked,
        )

    async def CreateCheckpoint(
        self, request: audit_pb2.CreateCheckpointRequest, context: Context
    ) -> audit_pb2.CreateCheckpointResponse:
        checkpoint = await self.log.checkpoint(request.workspace_id)
        if checkpoint is None:
            return audit_pb2.CreateCheckpointResponse()
        return audit_pb2.CreateCheckpointResponse(checkpoint=checkpoint_to_proto(checkpoint))

    async def ListCheckpoints(
        self, request: audit_pb2.ListCheckpointsRequest, context: Context
    ) -> audit_pb2.ListCheckpointsResponse:
        checkpoints, token = await self.log.list_checkpoints(
            request.workspace_id, page_size=request.page_size, page_token=request.page_token
        )
        return audit_pb2.ListCheckpointsResponse(
            checkpoints=[checkpoint_to_proto(c) for c in checkpoints], next_page_token=token
        )

    async def GetPublicKey(
        self, request: audit_pb2.GetPublicKeyRequest, context: Context
    ) -> audit_pb2.GetPublicKeyResponse:
        signer = self.log.signer
        return audit_pb2.GetPublicKeyResponse(
            key_id=signer.key_id, algorithm=ALGORITHM, public_key_pem=public_pem(signer.public)
        )

    async def EraseCustomer(
        self, request: audit_pb2.EraseCustomerRequest, context: Context
    ) -> audit_pb2.EraseCustomerResponse:
        erasure = await self.log.erase_customer(
            request.workspace_id, request.customer_id, actor=request.actor, reason=request.reason
        )
        return audit_pb2.EraseCustomerResponse(
            key_destroyed=erasure.key_destroyed, record=record_to_proto(erasure.record)
        )
