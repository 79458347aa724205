"""Provider callbacks for the gateway: signature checks and mapping onto our delivery statuses.

Pure functions (no I/O): the gateway's `/webhooks/twilio/status` and `/webhooks/line` routes verify the
signature first, reject and log a bad one, then parse what is left.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from twilio.request_validator import RequestValidator

from retain_channels.providers.base import DeliveryEvent

# Twilio MessageStatus -> our status. accepted/scheduled/queued/sending say nothing we do not already
# know (the message is `sent` once Twilio accepted it), so they are ignored.
TWILIO_STATUSES: dict[str, str] = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "opened",
    "undelivered": "failed",
    "failed": "failed",
    "canceled": "failed",
}


def verify_twilio_signature(url: str, params: Mapping[str, Any], signature: str, auth_token: str) -> bool:
    """`url` is the full public URL Twilio called (scheme, host, path and query), `params` the POST form."""
    if not signature or not auth_token:
        return False
    return bool(RequestValidator(auth_token).validate(url, dict(params), signature))


def verify_line_signature(body: bytes, signature: str, channel_secret: str) -> bool:
    """`body` must be the raw request body: re-serialised JSON does not reproduce LINE's bytes."""
    if not signature or not channel_secret:
        return False
    expected = base64.b64encode(hmac.new(channel_secret.encode(), body, hashlib.sha256).digest()).decode()
    return hmac.compare_digest(expected, signature.strip())


def parse_twilio_status(params: Mapping[str, Any]) -> DeliveryEvent | None:
    """A Twilio Message status callback (form fields MessageSid, MessageStatus, ErrorCode, ...)."""
    sid = str(params.get("MessageSid") or params.get("SmsSid") or "")
    raw_status = str(params.get("MessageStatus") or params.get("SmsStatus") or "").lower()
    status = TWILIO_STATUSES.get(raw_status)
    if not sid or status is None:
        return None
    error = ""
    code = str(params.get("ErrorCode") or "")
    if code:
        message = str(params.get("ErrorMessage") or "")
        error = f"twilio {code}: {message}" if message else f"twilio {code}"
    return DeliveryEvent(provider_message_id=sid, status=status, error=error)


@dataclass(frozen=True)
class LineFollowChange:
    """A LINE user (un)followed the OA. An unfollow must revoke LINE consent at once; a follow only
    re-opens the channel and is not marketing consent, so `consent_status` is empty for it."""

    user_id: str
    followed: bool
    occurred_at: datetime | None = None
    destination: str = ""

    @property
    def consent_status(self) -> str:
        return "" if self.followed else "withdrawn"


LineEvent = DeliveryEvent | LineFollowChange


def parse_line_events(payload: Mapping[str, Any]) -> list[LineEvent]:
    """The events of one LINE webhook body we act on, in order; other event types are skipped.

    `delivery` events (sent for LINE notification messages) carry the `delivery.data` we attached to the
    message, which is what we stored as its provider message id.
    """
    destination = str(payload.get("destination") or "")
    raw_events = payload.get("events")
    if not isinstance(raw_events, list):
        return []
    parsed: list[LineEvent] = []
    for event in raw_events:
        if not isinstance(event, Mapping):
            continue
        kind = event.get("type")
        occurred_at = _line_time(event.get("timestamp"))
        if kind in ("follow", "unfollow"):
            source = event.get("source")
            user_id = str(source.get("userId") or "") if isinstance(source, Mapping) else ""
            if user_id:
                parsed.append(LineFollowChange(user_id, kind == "follow", occurred_at, destination))
        elif kind == "delivery":
            delivery = event.get("delivery")
            data = str(delivery.get("data") or "") if isinstance(delivery, Mapping) else ""
            if data:
                parsed.append(DeliveryEvent(provider_message_id=data, status="delivered", occurred_at=occurred_at))
    return parsed


def parse_line_delivery(payload: Mapping[str, Any]) -> DeliveryEvent | None:
    """The first delivery event in a LINE webhook body (the Provider.parse_event shape)."""
    return next((e for e in parse_line_events(payload) if isinstance(e, DeliveryEvent)), None)


def _line_time(value: Any) -> datetime | None:
    # LINE timestamps are milliseconds since the epoch.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    return None
