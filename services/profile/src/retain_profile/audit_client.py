"""AuditSink over the AuditService gRPC API (fail-closed: any failure is UNAVAILABLE)."""

from __future__ import annotations

import logging

import grpc
from retain.audit.v1 import audit_pb2, audit_pb2_grpc
from retain_kit.audit_client import AuditAppender
from retain_kit.errors import Unavailable

from retain_profile.ports import ConsentAuditEntry

log = logging.getLogger(__name__)


class GrpcAuditSink:
    def __init__(self, channel: grpc.aio.Channel, *, timeout: float) -> None:
        self.stub = audit_pb2_grpc.AuditServiceStub(channel)
        self.timeout = timeout
        self.appender = AuditAppender(self.stub, timeout=timeout)

    async def append_consent(self, workspace_id: str, entry: ConsentAuditEntry) -> str:
        return await self.appender.append(
            workspace_id,
            kind="consent",
            customer_id=entry.customer_id,
            channel=entry.channel,
            outcome=entry.status,
            actor=entry.actor,
            payload={
                "change_id": entry.change_id,
                "purpose": entry.purpose,
                "status": entry.status,
                "previous_status": entry.previous_status,
                "source": entry.source,
                "lawful_basis": entry.lawful_basis,
                "policy_version": entry.policy_version,
            },
            occurred_at=entry.occurred_at,
            # A retried append of the same change is stored once by the audit service.
            idempotency_key=f"consent:{entry.change_id}",
            failure="audit log did not record the consent change; nothing was changed",
        )

    async def erase_customer(self, workspace_id: str, customer_id: str, *, actor: str, reason: str) -> bool:
        request = audit_pb2.EraseCustomerRequest(
            workspace_id=workspace_id, customer_id=customer_id, actor=actor, reason=reason
        )
        try:
            response = await self.stub.EraseCustomer(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                # An audit service without crypto-shredding: profile's own erasure still proceeds.
                log.warning("audit does not implement EraseCustomer; %s's audit key was not shredded", customer_id)
                return False
            raise Unavailable(
                f"audit could not shred the customer's key ({exc.code().name}); nothing was erased"
            ) from exc
        return bool(response.key_destroyed)
