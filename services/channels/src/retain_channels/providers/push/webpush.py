"""Web Push (RFC 8030) with VAPID (RFC 8292) through pywebpush, run in a worker thread.

The recipient is the browser's PushSubscription as JSON ({"endpoint": ..., "keys": {"p256dh", "auth"}});
the endpoint host belongs to the browser vendor, not to us, so nothing here names one.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from typing import Any

import requests
from pydantic import Field, SecretStr
from pywebpush import WebPushException, webpush  # type: ignore[import-untyped]

from retain_channels.providers.base import (
    DeliveryEvent,
    OutboundMessage,
    PermanentProviderError,
    ProviderContext,
    SendResult,
    TransientProviderError,
)
from retain_channels.providers.ratelimit import RateLimitConfig

UNREGISTERED = "unregistered"


class WebPushConfig(RateLimitConfig):
    # The VAPID private key: base64url DER/raw or PEM, as py_vapid reads it.
    vapid_private_key: SecretStr
    # Contact for the push service operator, "mailto:..." or an https URL.
    vapid_subject: str
    ttl_seconds: int = Field(default=24 * 3600, ge=0)
    urgency: str = "normal"
    timeout_seconds: float = 15.0


def topic_for(msg: OutboundMessage) -> str:
    """RFC 8030 Topic (<= 32 URL-safe chars): a re-sent copy replaces an undelivered first one."""
    digest = hashlib.sha256(f"{msg.workspace_id}\x00{msg.idempotency_key}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:32]


class WebPushProvider:
    """Encrypts `{"title", "body", "message_id"}` for the subscription and posts it to its endpoint."""

    def __init__(self, config: WebPushConfig, ctx: ProviderContext) -> None:
        self.config = config
        self.channel = ctx.channel
        self._bucket = config.bucket()

    async def send(self, msg: OutboundMessage) -> SendResult:
        if msg.channel != self.channel:
            raise PermanentProviderError(f"webpush provider for {self.channel} got a {msg.channel} message")
        subscription = _subscription(msg.recipient)
        payload = json.dumps(
            {"title": msg.subject, "body": msg.body, "message_id": msg.message_id}, ensure_ascii=False
        )
        topic = topic_for(msg)
        await self._bucket.acquire()
        try:
            response = await asyncio.to_thread(self._post, subscription, payload, topic)
        except WebPushException as exc:
            raise _classify(exc) from exc
        except (requests.RequestException, OSError) as exc:
            raise TransientProviderError(f"push service unreachable: {exc}") from exc
        location = response.headers.get("Location", "") if isinstance(response, requests.Response) else ""
        return SendResult(location or f"webpush_{topic}", {"topic": topic})

    def _post(self, subscription: dict[str, Any], payload: str, topic: str) -> Any:
        cfg = self.config
        return webpush(
            subscription,
            data=payload,
            vapid_private_key=cfg.vapid_private_key.get_secret_value(),
            # pywebpush fills aud/exp into the dict it is given, so each call gets its own.
            vapid_claims={"sub": cfg.vapid_subject},
            ttl=cfg.ttl_seconds,
            timeout=cfg.timeout_seconds,
            headers={"Topic": topic, "Urgency": cfg.urgency},
        )

    def parse_event(self, payload: dict[str, Any]) -> DeliveryEvent | None:
        # Web Push has no delivery receipts.
        return None

    async def close(self) -> None:
        return None


def _subscription(recipient: str) -> dict[str, Any]:
    try:
        data = json.loads(recipient)
    except ValueError:
        data = None
    keys = data.get("keys") if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or not str(data.get("endpoint", "")).startswith(("https://", "http://"))
        or not isinstance(keys, dict)
        or not keys.get("p256dh")
        or not keys.get("auth")
    ):
        raise PermanentProviderError("recipient is not a Web Push subscription (endpoint, keys.p256dh, keys.auth)")
    return data


def _classify(exc: WebPushException) -> Exception:
    status = exc.response.status_code if exc.response is not None else 0
    detail = f"push service {status or 'error'}: {exc.message}"
    if status in (404, 410):
        # The subscription is gone for good: the caller should drop it.
        return PermanentProviderError(detail, reason=UNREGISTERED)
    if status in (0, 429) or status >= 500:
        return TransientProviderError(detail)
    return PermanentProviderError(detail)
