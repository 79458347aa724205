"""AuditSink over the AuditService gRPC API."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
from retain.audit.v1 import audit_pb2
from retain.common.v1 import common_pb2
from retain_kit.enums import channel_value
from retain_kit.errors import Unavailable
from retain_kit.protoconv import to_struct, to_timestamp

from retain_channels.ports import AuditEntry

if TYPE_CHECKING:
    # The async stub type exists only in the generated .pyi; at runtime the plain stub is built on an
    # aio channel and its calls are awaitable.
    from retain.audit.v1.audit_pb2_grpc import AuditServiceAsyncStub


class GrpcAuditSink:
    def __init__(self, stub: AuditServiceAsyncStub, *, timeout: float, actor: str = "channels") -> None:
        self.stub = stub
        self.timeout = timeout
        self.actor = actor

    async def append(self, workspace_id: str, entry: AuditEntry) -> None:
        record = audit_pb2.RecordInput(
            kind=audit_pb2.RECORD_KIND_MESSAGE,
            customer_id=entry.customer_id,
            decision_id=entry.decision_id,
            message_id=entry.message_id,
            channel=channel_value(entry.channel) if entry.channel else common_pb2.CHANNEL_UNSPECIFIED,
            offer_id=entry.offer_id,
            outcome=entry.outcome,
            actor=self.actor,
            payload=to_struct(entry.payload),
            idempotency_key=entry.idempotency_key,
        )
        occurred_at = to_timestamp(entry.occurred_at)
        if occurred_at is not None:
            record.occurred_at.CopyFrom(occurred_at)
        try:
            await self.stub.Append(
                audit_pb2.AppendRequest(workspace_id=workspace_id, record=record), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as exc:
            # Whatever the audit service's reason, an unrecorded change must not go ahead.
            raise Unavailable(f"audit log unavailable: {exc.code().name}: {exc.details()}") from exc
