"""Appending to the audit log over gRPC, fail-closed: every service that writes audit records uses this."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import trace
from retain.audit.v1 import audit_pb2
from retain.common.v1 import common_pb2

from retain_kit.enums import channel_value
from retain_kit.errors import Unavailable
from retain_kit.protoconv import to_timestamp

if TYPE_CHECKING:
    # The async stub type exists only in the generated .pyi; at runtime the plain stub built on an aio
    # channel returns awaitables.
    from retain.audit.v1.audit_pb2_grpc import AuditServiceAsyncStub


# Records per AppendBatch: well under audit's own limit, so one slow group never holds many callers.
MAX_GROUP = 256

_tracer = trace.get_tracer(__name__)


@dataclass
class _Waiting:
    record: audit_pb2.RecordInput
    failure: str
    span: trace.SpanContext
    answer: asyncio.Future[str]


class AuditAppender:
    """Appends records; returns only once audit has made the record durable, and any failure raises
    Unavailable, so the caller's change does not go ahead.

    Appends that arrive while an earlier one is on its way travel together in the next AppendBatch (one
    RPC and one transaction for the group instead of one each). Nothing waits for company: a lone append
    leaves at once, so the batching costs no latency, only saves work under load. Each caller's span is
    linked from the batch's span, so every trace still shows its record's trip to audit.
    """

    def __init__(self, stub: AuditServiceAsyncStub, *, timeout: float) -> None:
        self.stub = stub
        self.timeout = timeout
        self._waiting: dict[str, list[_Waiting]] = {}
        self._senders: dict[str, asyncio.Task[None]] = {}

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
        journey_id: str = "",
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
            journey_id=journey_id,
            outcome=outcome,
            actor=actor,
            payload_json=json.dumps(payload, separators=(",", ":")) if payload else "",
            occurred_at=to_timestamp(occurred_at),
            idempotency_key=idempotency_key,
        )
        with _tracer.start_as_current_span("audit append") as span:
            answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            # A caller that gave up never reads its error: mark it read so asyncio does not log it.
            answer.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._waiting.setdefault(workspace_id, []).append(
                _Waiting(record, failure, span.get_span_context(), answer)
            )
            if workspace_id not in self._senders:
                self._senders[workspace_id] = asyncio.create_task(self._send(workspace_id))
            # shield: a caller that gives up must not cancel the RPC its group shares
            return await asyncio.shield(answer)

    async def _send(self, workspace_id: str) -> None:
        """Sends the workspace's waiting records in groups until none are left."""
        try:
            while queue := self._waiting.get(workspace_id):
                group = queue[:MAX_GROUP]
                del queue[:MAX_GROUP]
                await self._send_group(workspace_id, group)
        finally:
            del self._senders[workspace_id]
            if not self._waiting.get(workspace_id):
                self._waiting.pop(workspace_id, None)

    async def _send_group(self, workspace_id: str, group: list[_Waiting]) -> None:
        request = audit_pb2.AppendBatchRequest(
            workspace_id=workspace_id, records=[w.record for w in group], receipts_only=True
        )
        links = [trace.Link(w.span) for w in group]
        try:
            with _tracer.start_as_current_span("audit append group", links=links) as span:
                span.set_attribute("retain.audit.records", len(group))
                response = await self.stub.AppendBatch(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            # Whatever audit answered, the records are not durable: every caller must fail closed.
            detail = f"{exc.code().name} {exc.details() or ''}".strip()
            for w in group:
                _settle(w.answer, error=Unavailable(f"{w.failure}: {detail}"))
            return
        except BaseException as exc:
            for w in group:
                _settle(w.answer, error=Unavailable(f"{w.failure}: {exc!r}"))
            raise
        if len(response.records) != len(group):
            for w in group:
                _settle(w.answer, error=Unavailable(f"{w.failure}: audit answered {len(response.records)} of "
                                                    f"{len(group)} records"))
            return
        for w, stored in zip(group, response.records, strict=True):
            _settle(w.answer, result=stored.record_id)


def _settle(answer: asyncio.Future[str], *, result: str = "", error: BaseException | None = None) -> None:
    if answer.done():
        return
    if error is not None:
        answer.set_exception(error)
    else:
        answer.set_result(result)
