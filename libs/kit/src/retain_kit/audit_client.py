"""Appending to the audit log over gRPC, fail-closed: every service that writes audit records uses this."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import grpc
from retain.audit.v1 import audit_pb2
from retain.common.v1 import common_pb2

from retain_kit.enums import channel_value
from retain_kit.errors import Unavailable
from retain_kit.protoconv import to_struct, to_timestamp

if TYPE_CHECKING:
    # The async stub type exists only in the generated .pyi; at runtime the plain stub built on an aio
    # channel returns awaitables.
    from retain.audit.v1.audit_pb2_grpc import AuditServiceAsyncStub


class AuditAppender:
    """One Append per record; any failure raises Unavailable, so the caller's change does not go ahead."""

    def __init__(self, stub: AuditServiceAsyncStub, *, timeout: float) -> None:
        self.stub = stub
        self.timeout = timeout

    async def append(
        self,
        workspace_id: str,
        *,
        kind: str,
        customer_id: str = "",
        decision_id: str = "",
        message_id: str = "",
        channel: str = "",
        offer_id: str = "",
        outcome: str = "",
        actor: str = "",
        payload: Mapping[str, Any] | None = None,
        occurred_at: datetime | None = None,
        idempotency_key: str = "",
        failure: str = "audit log unavailable",
    ) -> str:
        """Returns the record id; `failure` prefixes the Unavailable message the caller's client sees."""
        record = audit_pb2.RecordInput(
            kind=audit_pb2.RecordKind.Value("RECORD_KIND_" + kind.upper()),
            customer_id=customer_id,
            decision_id=decision_id,
            message_id=message_id,
            channel=channel_value(channel) if channel else common_pb2.CHANNEL_UNSPECIFIED,
            offer_id=offer_id,
            outcome=outcome,
            actor=actor,
            payload=to_struct(dict(payload or {})),
            occurred_at=to_timestamp(occurred_at),
            idempotency_key=idempotency_key,
        )
        try:
            response = await self.stub.Append(
                audit_pb2.AppendRequest(workspace_id=workspace_id, record=record), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as exc:
            # Whatever audit answered, the record is not durable: the caller must fail closed.
            raise Unavailable(f"{failure}: {exc.code().name} {exc.details() or ''}".strip()) from exc
        record_id: str = response.record.record_id
        return record_id
