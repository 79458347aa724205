"""What the channels use cases need from the outside world."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class AuditEntry:
    """One `kind=message` audit record about a message status change."""

    outcome: str
    message_id: str
    customer_id: str
    channel: str
    offer_id: str = ""
    decision_id: str = ""
    journey_id: str = ""
    payload: dict[str, Any] = field(default_factory=dict)
    occurred_at: datetime | None = None
    # Makes a retried append store once (the outbox worker re-appends after crashes).
    idempotency_key: str = ""


class AuditSink(Protocol):
    """The audit log. `append` returns only once the record is durable and raises
    retain_kit.errors.Unavailable otherwise, so callers can fail closed."""

    async def append(self, workspace_id: str, entry: AuditEntry) -> None: ...
