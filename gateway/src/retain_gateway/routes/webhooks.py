"""Provider callbacks: Twilio message status callbacks and LINE webhooks.

No API key: the provider proves itself by signing the request with the secret it shares with the
workspace (`X-Twilio-Signature`, `X-Line-Signature`). A request whose signature does not verify is
answered 403, logged as one structured line, and never looked at further.

Configuration (gateway settings, env `RETAIN_GATEWAY_WEBHOOK_SECRETS`, JSON):

    {"twilio": {"<AccountSid>": {"workspace_id": "ws_1", "auth_token": "<Twilio auth token>"}},
     "line":   {"<destination: the bot's user id>": {"workspace_id": "ws_1", "channel_secret": "<secret>"}}}

Twilio signs the exact URL it called; behind a proxy set `RETAIN_GATEWAY_WEBHOOK_PUBLIC_URL` to the public
base (e.g. `https://retain.example.com`) so the URL is rebuilt as the provider saw it.

What a verified callback does:
- a delivery status goes to ChannelService.RecordDeliveryEvent (the channels service maps the provider's
  status onto ours, audits it and updates the message), then to profile as a `Message Delivered` /
  `Opened` / `Clicked` / `Failed` event whose message id is derived from (message, status), so a replayed
  callback is a duplicate everywhere;
- a LINE `unfollow` withdraws every granted LINE consent of the customer known by that LINE user id
  (source `line:unfollow`); a `follow` grants back exactly the consents an unfollow withdrew — the current
  consent state records who withdrew it, so a customer who never consented, or who withdrew through the
  brand, is not opted in by following the OA.

Signature checks are implemented here (HMAC-SHA1 for Twilio's documented scheme, HMAC-SHA256 for LINE) so
the gateway needs no vendor SDK; the tests check them against the Twilio SDK's own validator.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc
from fastapi import APIRouter, Request
from pydantic import BaseModel
from retain.channels.v1 import channels_pb2, channels_pb2_grpc
from retain.common.v1 import common_pb2
from retain.profile.v1 import profile_pb2
from retain_kit.enums import channel_name, delivery_status_name
from retain_kit.errors import FIELD_METADATA_KEY
from retain_kit.protoconv import to_struct, to_timestamp

from retain_gateway.errors import ApiError
from retain_gateway.schemas import ErrorOut
from retain_gateway.state import GatewayState, state_of

log = logging.getLogger(__name__)
router = APIRouter(tags=["webhooks"])

UNFOLLOW_SOURCE = "line:unfollow"
FOLLOW_SOURCE = "line:follow"
ACTOR = "webhook:line"
# Our delivery statuses that become profile events (`sent` is known at dispatch, `queued` is ours).
PROFILE_EVENTS = {
    "delivered": "Message Delivered",
    "opened": "Message Opened",
    "clicked": "Message Clicked",
    "failed": "Message Failed",
    "bounced": "Message Failed",
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "A signed body that is not a form (Twilio) or not JSON (LINE)"},
    403: {"model": ErrorOut, "description": "Missing or invalid signature, or an unknown provider account"},
    503: {"model": ErrorOut, "description": "A downstream service is unavailable; the provider should retry"},
}


class WebhookResult(BaseModel):
    """What became of one provider event: `recorded`, `duplicate`, `ignored`, `unknown_message`,
    `consent_withdrawn`, `consent_restored`, `no_change` or `unknown_customer`."""

    kind: str
    outcome: str
    message_id: str = ""
    status: str = ""


class WebhookOut(BaseModel):
    received: int
    results: list[WebhookResult]


@dataclass(frozen=True)
class Account:
    workspace_id: str
    secret: str


# -- signatures (pure) -----------------------------------------------------------------------------


def twilio_signature(url: str, params: Iterable[tuple[str, str]], auth_token: str) -> str:
    """Twilio's scheme: the full URL, then every POST parameter name + value sorted by name, HMAC-SHA1."""
    grouped: dict[str, set[str]] = {}
    for name, value in params:
        grouped.setdefault(name, set()).add(value)
    payload = url + "".join(name + value for name in sorted(grouped) for value in sorted(grouped[name]))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _with_and_without_port(url: str) -> list[str]:
    """Twilio may have signed the URL with or without the scheme's default port; both are accepted."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    if default is None:
        return [url]
    if parts.port is None:
        return [url, urlunsplit(parts._replace(netloc=f"{parts.netloc}:{default}"))]
    if parts.port == default:
        return [url, urlunsplit(parts._replace(netloc=parts.netloc.rsplit(":", 1)[0]))]
    return [url]


def verify_twilio(url: str, params: Iterable[tuple[str, str]], signature: str, auth_token: str) -> bool:
    if not signature or not auth_token:
        return False
    items = list(params)
    return any(
        hmac.compare_digest(twilio_signature(candidate, items, auth_token), signature.strip())
        for candidate in _with_and_without_port(url)
    )


def line_signature(body: bytes, channel_secret: str) -> str:
    return base64.b64encode(hmac.new(channel_secret.encode(), body, hashlib.sha256).digest()).decode()


def verify_line(body: bytes, signature: str, channel_secret: str) -> bool:
    """Over the raw body: re-serialised JSON would not reproduce LINE's bytes."""
    if not signature or not channel_secret:
        return False
    return hmac.compare_digest(line_signature(body, channel_secret), signature.strip())


# -- configuration --------------------------------------------------------------------------------


def accounts(state: GatewayState, provider: str, secret_key: str) -> dict[str, Account]:
    configured = state.settings.webhook_secrets.get(provider, {})
    return {
        account_id: Account(str(entry.get("workspace_id", "")), str(entry.get(secret_key, "")))
        for account_id, entry in configured.items()
        if entry.get("workspace_id") and entry.get(secret_key)
    }


def public_url(state: GatewayState, request: Request) -> str:
    base = state.settings.webhook_public_url.rstrip("/")
    if not base:
        return str(request.url)
    query = request.url.query
    return f"{base}{request.url.path}" + (f"?{query}" if query else "")


def reject(request: Request, *, provider: str, reason: str, account: str = "") -> ApiError:
    client = request.client.host if request.client else ""
    log.warning(
        "webhook rejected %s",
        json.dumps(
            {"event": "webhook_rejected", "provider": provider, "reason": reason, "account": account,
             "path": request.url.path, "remote": client},
            ensure_ascii=False,
        ),
    )
    return ApiError(403, "webhook signature could not be verified", error="invalid_signature")


# -- routes ---------------------------------------------------------------------------------------

_TWILIO_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["AccountSid", "MessageSid", "MessageStatus"],
                    "properties": {
                        "AccountSid": {"type": "string"},
                        "MessageSid": {"type": "string"},
                        "MessageStatus": {
                            "type": "string",
                            "description": "queued, sending, sent, delivered, read, undelivered, failed, ...",
                        },
                        "ErrorCode": {"type": "string"},
                        "ErrorMessage": {"type": "string"},
                    },
                    "additionalProperties": {"type": "string"},
                }
            }
        },
    },
    "parameters": [
        {"name": "X-Twilio-Signature", "in": "header", "required": True, "schema": {"type": "string"},
         "description": "Base64 HMAC-SHA1 of the public URL plus the sorted form fields, keyed by the auth token"}
    ],
}

_LINE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["events"],
                    "properties": {
                        "destination": {"type": "string", "description": "The bot's user id"},
                        "events": {"type": "array", "items": {"type": "object"}},
                    },
                }
            }
        },
    },
    "parameters": [
        {"name": "X-Line-Signature", "in": "header", "required": True, "schema": {"type": "string"},
         "description": "Base64 HMAC-SHA256 of the raw body, keyed by the channel secret"}
    ],
}


@router.post(
    "/webhooks/twilio/status", response_model=WebhookOut, responses=_ERRORS, openapi_extra=_TWILIO_BODY,
    summary="Twilio message status callback",
)
async def twilio_status(request: Request) -> Any:
    """Signature-verified (`X-Twilio-Signature`); no API key. The workspace is the one configured for
    the callback's AccountSid."""
    state = state_of(request)
    try:
        form = await request.form()
    except Exception as exc:
        # Starlette raises its own errors for malformed multipart/urlencoded bodies.
        raise ApiError(400, "the body is not a form", field="body") from exc
    params = [(name, value) for name, value in form.multi_items() if isinstance(value, str)]
    account_sid = str(form.get("AccountSid") or "")
    account = accounts(state, "twilio", "auth_token").get(account_sid)
    if account is None:
        raise reject(request, provider="twilio", reason="unknown_account", account=account_sid)
    signature = request.headers.get("x-twilio-signature", "")
    if not verify_twilio(public_url(state, request), params, signature, account.secret):
        raise reject(request, provider="twilio", reason="bad_signature" if signature else "missing_signature",
                     account=account_sid)
    raw = {name: value for name, value in params}
    result = await record_delivery(
        state, account.workspace_id, provider="twilio", provider_message_id=str(form.get("MessageSid") or ""),
        raw=raw, occurred_at=None,
    )
    return WebhookOut(received=1, results=[result])


@router.post(
    "/webhooks/line", response_model=WebhookOut, responses=_ERRORS, openapi_extra=_LINE_BODY,
    summary="LINE Messaging API webhook",
)
async def line_webhook(request: Request) -> Any:
    """Signature-verified (`X-Line-Signature`); no API key. Handles `follow`, `unfollow` and `delivery`
    events; others are acknowledged and skipped."""
    state = state_of(request)
    body = await request.body()
    signature = request.headers.get("x-line-signature", "")
    configured = accounts(state, "line", "channel_secret")
    # The signature is checked before the body is parsed: each configured channel secret is tried, and
    # the one that verifies names the workspace.
    matched = [(dest, acc) for dest, acc in configured.items() if verify_line(body, signature, acc.secret)]
    if not matched:
        raise reject(request, provider="line", reason="bad_signature" if signature else "missing_signature")
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise ApiError(400, "the body is not JSON", field="body") from exc
    destination = str(payload.get("destination") or "") if isinstance(payload, dict) else ""
    if destination and destination not in {dest for dest, _ in matched}:
        raise reject(request, provider="line", reason="destination_mismatch", account=destination)
    account = next((acc for dest, acc in matched if dest == destination), matched[0][1])
    events = payload.get("events") if isinstance(payload, dict) else None
    if not isinstance(events, list):
        raise ApiError(422, "events must be a list", field="events")
    results: list[WebhookResult] = []
    for event in events:
        if not isinstance(event, dict):
            results.append(WebhookResult(kind="unknown", outcome="ignored"))
            continue
        results.append(await line_event(state, account.workspace_id, destination=destination, event=event))
    return WebhookOut(received=len(events), results=results)


# -- event handling -------------------------------------------------------------------------------


def channels_stub(state: GatewayState) -> Any:
    downstream = next(d for d in state.downstreams if d.name == "channels")
    return channels_pb2_grpc.ChannelServiceStub(downstream.channel)


def _line_time(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    return None


def _stamp(target: Any, when: datetime | None) -> None:
    stamp = to_timestamp(when) if when is not None else None
    if stamp is not None:
        target.CopyFrom(stamp)


def _field(exc: grpc.aio.AioRpcError) -> str:
    return str(dict(exc.trailing_metadata() or ()).get(FIELD_METADATA_KEY, ""))


async def line_event(
    state: GatewayState, workspace_id: str, *, destination: str, event: Mapping[str, Any]
) -> WebhookResult:
    kind = str(event.get("type") or "")
    occurred_at = _line_time(event.get("timestamp"))
    if kind in ("follow", "unfollow"):
        source = event.get("source")
        user_id = str(source.get("userId") or "") if isinstance(source, Mapping) else ""
        if not user_id:
            return WebhookResult(kind=kind, outcome="ignored")
        return await line_follow(
            state, workspace_id, user_id=user_id, followed=kind == "follow", occurred_at=occurred_at
        )
    if kind == "delivery":
        delivery = event.get("delivery")
        data = str(delivery.get("data") or "") if isinstance(delivery, Mapping) else ""
        if not data:
            return WebhookResult(kind=kind, outcome="ignored")
        raw = {"destination": destination, "events": [dict(event)]}
        return await record_delivery(
            state, workspace_id, provider="line", provider_message_id=data, raw=raw, occurred_at=occurred_at
        )
    return WebhookResult(kind=kind or "unknown", outcome="ignored")


async def record_delivery(
    state: GatewayState,
    workspace_id: str,
    *,
    provider: str,
    provider_message_id: str,
    raw: dict[str, Any],
    occurred_at: datetime | None,
) -> WebhookResult:
    """Channels maps the raw provider event onto our statuses (one mapping, next to the adapter that
    sent the message), audits it and updates the message; profile then hears about it."""
    request = channels_pb2.RecordDeliveryEventRequest(
        workspace_id=workspace_id, provider=provider, provider_message_id=provider_message_id, raw=to_struct(raw)
    )
    _stamp(request.occurred_at, occurred_at)
    try:
        response = await channels_stub(state).RecordDeliveryEvent(request, timeout=state.timeout)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            # Not ours (or not stored yet); the provider's retry, if any, will find it.
            return WebhookResult(kind="delivery", outcome="unknown_message")
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT and _field(exc) == "raw":
            # A status that says nothing new to us (queued, sending, accepted ...).
            return WebhookResult(kind="delivery", outcome="ignored")
        raise
    message = response.message
    status = delivery_status_name(message.status)
    outcome = await profile_event(state, workspace_id, message=message, status=status, occurred_at=occurred_at)
    return WebhookResult(kind="delivery", outcome=outcome, message_id=message.message_id, status=status)


async def profile_event(
    state: GatewayState, workspace_id: str, *, message: channels_pb2.Message, status: str,
    occurred_at: datetime | None,
) -> str:
    """The message's current status as a profile event, with an id derived from (message, status): the
    same status reported twice, or a stale event that left the status as it was, is a duplicate."""
    name = PROFILE_EVENTS.get(status)
    if name is None:
        return "recorded"
    try:
        found = await state.profile.GetProfile(
            profile_pb2.GetProfileRequest(workspace_id=workspace_id, customer_id=message.customer_id),
            timeout=state.timeout,
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return "recorded"
    ids = {i.kind: i.value for i in found.profile.identifiers}
    user_id = ids.get(profile_pb2.IDENTIFIER_KIND_USER_ID, "")
    anonymous_id = "" if user_id else ids.get(profile_pb2.IDENTIFIER_KIND_ANONYMOUS_ID, "")
    if not user_id and not anonymous_id:
        # Erased customers keep no identifiers; there is nobody to attribute the event to.
        return "recorded"
    properties = {
        "channel": channel_name(message.channel),
        "message_id": message.message_id,
        "status": status,
        "provider": message.provider,
        "provider_message_id": message.provider_message_id,
        "offer_id": message.offer_id,
        "decision_id": message.decision_id,
    }
    event = profile_pb2.Event(
        message_id=f"chn:{message.message_id}:{status}",
        type=profile_pb2.EVENT_TYPE_TRACK,
        event=name,
        user_id=user_id,
        anonymous_id=anonymous_id,
        properties=to_struct(properties),
    )
    _stamp(event.timestamp, occurred_at)
    response = await state.profile.IngestEvents(
        profile_pb2.IngestEventsRequest(workspace_id=workspace_id, events=[event]), timeout=state.timeout
    )
    if response.rejected:
        log.warning("profile rejected %s for %s: %s", name, message.message_id, response.results[0].error)
        return "recorded"
    return "duplicate" if response.duplicates else "recorded"


async def line_follow(
    state: GatewayState, workspace_id: str, *, user_id: str, followed: bool, occurred_at: datetime | None
) -> WebhookResult:
    kind = "follow" if followed else "unfollow"
    try:
        found = await state.profile.GetProfile(
            profile_pb2.GetProfileRequest(
                workspace_id=workspace_id,
                identifier=profile_pb2.Identifier(kind=profile_pb2.IDENTIFIER_KIND_LINE_USER_ID, value=user_id),
            ),
            timeout=state.timeout,
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return WebhookResult(kind=kind, outcome="unknown_customer")
    profile = found.profile
    line_consents = [c for c in profile.consents if c.channel == common_pb2.CHANNEL_LINE]
    if followed:
        # Only what an unfollow took away comes back: the record says who withdrew it.
        targets = [c for c in line_consents
                   if c.status == common_pb2.CONSENT_STATUS_WITHDRAWN and c.source == UNFOLLOW_SOURCE]
        status, source, outcome = common_pb2.CONSENT_STATUS_GRANTED, FOLLOW_SOURCE, "consent_restored"
    else:
        targets = [c for c in line_consents if c.status == common_pb2.CONSENT_STATUS_GRANTED]
        status, source, outcome = common_pb2.CONSENT_STATUS_WITHDRAWN, UNFOLLOW_SOURCE, "consent_withdrawn"
    if not targets:
        return WebhookResult(kind=kind, outcome="no_change")
    changes = []
    for consent in targets:
        change = profile_pb2.ConsentChange(
            channel=common_pb2.CHANNEL_LINE, purpose=consent.purpose, status=status, source=source,
            # Kept so a restored grant carries the basis and policy it was originally given under.
            lawful_basis=consent.lawful_basis, policy_version=consent.policy_version,
        )
        _stamp(change.occurred_at, occurred_at)
        changes.append(change)
    await state.profile.SetConsents(
        profile_pb2.SetConsentsRequest(
            workspace_id=workspace_id, customer_id=profile.customer_id, changes=changes, actor=ACTOR
        ),
        timeout=state.timeout,
    )
    return WebhookResult(kind=kind, outcome=outcome)
