"""Incoming Segment-shaped events and the per-item validation that accepts or rejects them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from retain_profile.domain.identity import Identifier, IdentifierError, event_identifiers

EVENT_TYPES = ("track", "identify", "page", "alias", "screen")
# CDNOW-era imports are legitimate; anything older is a client clock or unit bug.
EARLIEST = datetime(1990, 1, 1, tzinfo=UTC)
MAX_CLOCK_SKEW = timedelta(days=1)
MAX_MESSAGE_ID = 200
MAX_EVENT_NAME = 200


@dataclass(frozen=True)
class IncomingEvent:
    message_id: str
    type: str
    event: str = ""
    user_id: str = ""
    anonymous_id: str = ""
    previous_id: str = ""
    properties: Mapping[str, Any] = field(default_factory=dict)
    traits: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)
    timestamp: datetime | None = None


@dataclass(frozen=True)
class Rejection:
    field: str
    error: str


@dataclass(frozen=True)
class ValidEvent:
    """An event that passed validation, with its time settled and its identifiers normalised."""

    source: IncomingEvent
    timestamp: datetime
    identifiers: tuple[Identifier, ...]
    traits: Mapping[str, Any]


def validate(
    event: IncomingEvent, *, now: datetime, country_code: str = "66"
) -> ValidEvent | Rejection:
    if not event.message_id.strip():
        return Rejection("message_id", "message_id is required")
    if len(event.message_id) > MAX_MESSAGE_ID:
        return Rejection("message_id", f"message_id is longer than {MAX_MESSAGE_ID} characters")
    if event.type not in EVENT_TYPES:
        return Rejection("type", f"type must be one of {', '.join(EVENT_TYPES)}")
    if not event.user_id and not event.anonymous_id:
        return Rejection("user_id", "user_id or anonymous_id is required")
    if event.type == "track" and not event.event.strip():
        return Rejection("event", "track events need an event name")
    if len(event.event) > MAX_EVENT_NAME:
        return Rejection("event", f"event is longer than {MAX_EVENT_NAME} characters")
    if event.type == "alias":
        if not event.previous_id.strip():
            return Rejection("previous_id", "alias events need previous_id")
        if not event.user_id:
            return Rejection("user_id", "alias events need user_id")
    timestamp = event.timestamp or now
    if timestamp < EARLIEST:
        return Rejection("timestamp", f"timestamp is before {EARLIEST.date().isoformat()}")
    if timestamp > now + MAX_CLOCK_SKEW:
        return Rejection("timestamp", "timestamp is more than a day in the future")
    try:
        identifiers = event_identifiers(
            user_id=event.user_id,
            anonymous_id=event.anonymous_id,
            traits=event.traits,
            context=event.context,
            country_code=country_code,
        )
    except IdentifierError as exc:
        return Rejection(exc.field, str(exc))
    return ValidEvent(event, timestamp, tuple(identifiers), event_traits(event))


def event_traits(event: IncomingEvent) -> dict[str, Any]:
    """Segment puts traits on identify calls and in context.traits elsewhere; the explicit ones win."""
    context_traits = event.context.get("traits")
    merged = dict(context_traits) if isinstance(context_traits, Mapping) else {}
    merged.update(event.traits)
    return merged
