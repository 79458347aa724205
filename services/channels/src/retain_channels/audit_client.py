"""AuditSink over the AuditService gRPC API (the shared fail-closed appender from retain_kit)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from retain_kit.audit_client import AuditAppender

from retain_channels.ports import AuditEntry

if TYPE_CHECKING:
    from retain.audit.v1.audit_pb2_grpc import AuditServiceAsyncStub


class GrpcAuditSink:
    def __init__(self, stub: AuditServiceAsyncStub, *, timeout: float, actor: str = "channels") -> None:
        self.appender = AuditAppender(stub, timeout=timeout)
        self.actor = actor

    async def append(self, workspace_id: str, entry: AuditEntry) -> None:
        await self.appender.append(
            workspace_id,
            kind="message",
            customer_id=entry.customer_id,
            decision_id=entry.decision_id,
            journey_id=entry.journey_id,
            message_id=entry.message_id,
            channel=entry.channel,
            offer_id=entry.offer_id,
            outcome=entry.outcome,
            actor=self.actor,
            payload=entry.payload,
            occurred_at=entry.occurred_at,
            idempotency_key=entry.idempotency_key,
        )
