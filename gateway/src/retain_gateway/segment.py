"""Segment HTTP Tracking API messages -> profile events."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from retain.profile.v1 import profile_pb2
from retain_kit.protoconv import to_struct, to_timestamp

from retain_gateway.errors import field_path
from retain_gateway.schemas import AliasIn, IdentifyIn, PageIn, ScreenIn, SegmentMessage, TrackIn

MODELS: dict[str, type[SegmentMessage]] = {
    "track": TrackIn,
    "identify": IdentifyIn,
    "page": PageIn,
    "screen": ScreenIn,
    "alias": AliasIn,
}
_TYPES: dict[str, profile_pb2.EventType.ValueType] = {
    "track": profile_pb2.EVENT_TYPE_TRACK,
    "identify": profile_pb2.EVENT_TYPE_IDENTIFY,
    "page": profile_pb2.EVENT_TYPE_PAGE,
    "screen": profile_pb2.EVENT_TYPE_SCREEN,
    "alias": profile_pb2.EVENT_TYPE_ALIAS,
}
# Profile names fields by its proto names; clients sent Segment's camelCase.
_SEGMENT_NAMES = {
    "user_id": "userId",
    "anonymous_id": "anonymousId",
    "message_id": "messageId",
    "previous_id": "previousId",
}
_EVENTS_PREFIX = re.compile(r"^events\[\d+\]\.")


class ItemError(Exception):
    """One message is unusable; `field` is relative to the message (e.g. `userId`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def identity_problem(msg: SegmentMessage) -> ItemError | None:
    """Segment requires someone to attach the message to; alias needs both ends of the link."""
    if isinstance(msg, AliasIn):
        return None if msg.user_id else ItemError("userId", "alias needs userId")
    if not msg.user_id and not msg.anonymous_id:
        return ItemError("userId", "either userId or anonymousId is required")
    return None


def parse_item(raw: Any) -> SegmentMessage:
    """Validates one batch item; raises ItemError naming the offending field."""
    if not isinstance(raw, dict):
        raise ItemError("", "each batch item must be an object")
    kind = raw.get("type")
    model = MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise ItemError("type", f"type must be one of {', '.join(MODELS)}")
    try:
        msg = model.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ItemError(field_path(err["loc"]), err["msg"]) from None
    if (problem := identity_problem(msg)) is not None:
        raise problem
    return msg


def to_event(
    msg: SegmentMessage, *, received_at: datetime, batch_context: dict[str, Any] | None = None
) -> profile_pb2.Event:
    """A profile event; a missing messageId is generated so retries of this request stay distinct."""
    context = {**(batch_context or {}), **(msg.context or {})}
    event = profile_pb2.Event(
        message_id=msg.message_id or str(uuid.uuid4()),
        type=_TYPES[_kind(msg)],
        user_id=msg.user_id or "",
        anonymous_id=msg.anonymous_id or "",
        context=to_struct(context),
        timestamp=to_timestamp(msg.timestamp or received_at),
        received_at=to_timestamp(received_at),
    )
    match msg:
        case TrackIn():
            event.event = msg.event
            event.properties.CopyFrom(to_struct(msg.properties))
        case IdentifyIn():
            event.traits.CopyFrom(to_struct(msg.traits))
        case PageIn():
            event.event = msg.name or ""
            properties = dict(msg.properties or {})
            if msg.category:
                properties.setdefault("category", msg.category)
            event.properties.CopyFrom(to_struct(properties))
        case ScreenIn():
            event.event = msg.name or ""
            event.properties.CopyFrom(to_struct(msg.properties))
        case AliasIn():
            event.previous_id = msg.previous_id
    return event


def _kind(msg: SegmentMessage) -> str:
    kind = getattr(msg, "type", "")
    assert isinstance(kind, str)
    return kind


def client_field(field: str) -> str:
    """`events[0].user_id` (profile's name) -> `userId` (what the client sent)."""
    bare = _EVENTS_PREFIX.sub("", field)
    head, dot, rest = bare.partition(".")
    return _SEGMENT_NAMES.get(head, head) + dot + rest
