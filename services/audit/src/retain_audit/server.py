"""gRPC servicer: proto <-> domain translation only."""

from __future__ import annotations

from typing import Any

import grpc
from retain.audit.v1 import audit_pb2, audit_pb2_grpc
from retain.common.v1 import common_pb2
from retain_kit.enums import channel_name, channel_value
from retain_kit.protoconv import from_struct, from_timestamp, to_struct, to_timestamp

from retain_audit.models import AuditRecordRow
from retain_audit.repository import NewRecord, RecordFilter, to_entry
from retain_audit.service import AuditLog


def kind_name(value: audit_pb2.RecordKind.ValueType) -> str:
    return audit_pb2.RecordKind.Name(value).removeprefix("RECORD_KIND_").lower() if value else ""


def kind_value(name: str) -> audit_pb2.RecordKind.ValueType:
    return audit_pb2.RecordKind.Value("RECORD_KIND_" + name.upper())


def record_to_proto(row: AuditRecordRow) -> audit_pb2.AuditRecord:
    entry = to_entry(row)
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
        payload=to_struct(entry.payload),
        occurred_at=to_timestamp(entry.occurred_at),
        recorded_at=to_timestamp(entry.recorded_at),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, log: AuditLog) -> None:
        self.log = log

    async def Append(
        self, request: audit_pb2.AppendRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> audit_pb2.AppendResponse:
        r = request.record
        row = await self.log.append(
            request.workspace_id,
            NewRecord(
                kind=kind_name(r.kind),
                customer_id=r.customer_id,
                decision_id=r.decision_id,
                message_id=r.message_id,
                channel=channel_name(r.channel),
                journey_id=r.journey_id,
                offer_id=r.offer_id,
                outcome=r.outcome,
                actor=r.actor,
                payload=from_struct(r.payload) if r.HasField("payload") else {},
                occurred_at=from_timestamp(r.occurred_at) if r.HasField("occurred_at") else None,
                idempotency_key=r.idempotency_key,
            ),
        )
        return audit_pb2.AppendResponse(record=record_to_proto(row))

    async def ListRecords(
        self, request: audit_pb2.ListRecordsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> audit_pb2.ListRecordsResponse:
        flt = RecordFilter(
            workspace_id=request.workspace_id,
            customer_id=request.customer_id,
            kind=kind_name(request.kind),
            channel=channel_name(request.channel),
            decision_id=request.decision_id,
            journey_id=request.journey_id,
            offer_id=request.offer_id,
            outcome=request.outcome,
            since=from_timestamp(request.since) if request.HasField("since") else None,
            until=from_timestamp(request.until) if request.HasField("until") else None,
        )
        rows, token = await self.log.list(flt, page_size=request.page_size, page_token=request.page_token)
        return audit_pb2.ListRecordsResponse(records=[record_to_proto(r) for r in rows], next_page_token=token)

    async def Verify(
        self, request: audit_pb2.VerifyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> audit_pb2.VerifyResponse:
        result = await self.log.verify(request.workspace_id)
        return audit_pb2.VerifyResponse(
            ok=result.ok,
            records_checked=result.checked,
            first_broken_seq=result.first_broken_seq,
            detail=result.detail,
            head_hash=result.head_hash,
        )
