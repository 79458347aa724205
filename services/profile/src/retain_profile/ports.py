"""What the profile use cases need from the outside world."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class ConsentAuditEntry:
    change_id: str
    customer_id: str
    channel: str
    purpose: str
    status: str
    previous_status: str
    source: str
    lawful_basis: str
    policy_version: str
    actor: str
    occurred_at: datetime


@dataclass(frozen=True)
class StreamEvent:
    workspace_id: str
    message_id: str
    customer_id: str
    event: str
    type: str
    timestamp: datetime
    properties: Mapping[str, Any]
    # `properties` already encoded as the stream carries it (publisher.properties_json), when at hand.
    properties_json: str = ""


def properties_json(properties: Mapping[str, Any]) -> str:
    """Properties as the stream (and the events table) carry them: a JSON object, keys sorted."""
    return json.dumps(dict(properties), ensure_ascii=False, sort_keys=True)


class AuditSink(Protocol):
    """The audit log. Must raise retain_kit.errors.Unavailable when the record is not durable."""

    async def append_consent(self, workspace_id: str, entry: ConsentAuditEntry) -> str:
        """Append one consent change; returns the audit record id."""
        ...

    async def erase_customer(self, workspace_id: str, customer_id: str, *, actor: str, reason: str) -> bool:
        """Crypto-shred the customer's audit key; True when a key was destroyed, False when audit has no
        erasure support yet. Raises Unavailable when audit cannot be reached (the erasure then waits)."""
        ...


class EventPublisher(Protocol):
    """Where accepted events go for the journey engine (a Redis stream per workspace)."""

    @property
    def enabled(self) -> bool:
        """False when there is nowhere to publish (events are then never marked pending)."""
        ...

    async def publish(self, events: Sequence[StreamEvent]) -> bool:
        """True only when every event is on the stream; False leaves them for the republisher."""
        ...
