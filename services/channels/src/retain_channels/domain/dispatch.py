"""What a dispatch request must carry, checked before anything is stored."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from retain_kit.enums import CHANNELS
from retain_kit.errors import InvalidArgument

# Channels that need an address; in-app messages are fetched by the customer's own app.
ADDRESSED_CHANNELS = frozenset({"email", "sms", "line", "push"})


@dataclass(frozen=True)
class Draft:
    """A message as the caller hands it over: templates not yet rendered."""

    idempotency_key: str
    customer_id: str
    channel: str
    recipient: str = ""
    offer_id: str = ""
    purpose: str = ""
    decision_id: str = ""
    journey_id: str = ""
    locale: str = ""
    subject: str = ""
    body: str = ""
    variables: dict[str, Any] = field(default_factory=dict)


def validate(workspace_id: str, draft: Draft) -> None:
    if not workspace_id:
        raise InvalidArgument("workspace_id is required", field="workspace_id")
    if not draft.channel:
        raise InvalidArgument("message.channel is required", field="message.channel")
    if draft.channel not in CHANNELS:
        raise InvalidArgument(f"unknown channel {draft.channel!r}", field="message.channel")
    if not draft.customer_id:
        raise InvalidArgument("message.customer_id is required", field="message.customer_id")
    if not draft.idempotency_key:
        raise InvalidArgument("message.idempotency_key is required", field="message.idempotency_key")
    if len(draft.idempotency_key) > 200:
        raise InvalidArgument("message.idempotency_key is longer than 200 characters",
                              field="message.idempotency_key")
    if draft.channel in ADDRESSED_CHANNELS and not draft.recipient:
        raise InvalidArgument(f"message.recipient is required for {draft.channel}", field="message.recipient")
    if not draft.body:
        raise InvalidArgument("message.body is required", field="message.body")


def provider_latency_ms(received_at: datetime, provider_called_at: datetime | None) -> float:
    """Milliseconds from the Dispatch request to the first provider call; 0 before that call."""
    if provider_called_at is None:
        return 0.0
    # SQLite hands back naive datetimes; everything stored is UTC.
    start = received_at if received_at.tzinfo else received_at.replace(tzinfo=UTC)
    end = provider_called_at if provider_called_at.tzinfo else provider_called_at.replace(tzinfo=UTC)
    return (end - start).total_seconds() * 1000.0
