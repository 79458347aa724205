"""SMS through Twilio's Messages API with the official (synchronous) SDK, run in a worker thread."""

from __future__ import annotations

import asyncio
from typing import Any

import requests
from pydantic import SecretStr, model_validator
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from retain_channels.providers.base import (
    DeliveryEvent,
    OutboundMessage,
    PermanentProviderError,
    ProviderContext,
    SendResult,
    TransientProviderError,
)
from retain_channels.providers.ratelimit import RateLimitConfig
from retain_channels.webhooks import parse_twilio_status


class TwilioConfig(RateLimitConfig):
    account_sid: str
    auth_token: SecretStr
    # One of the two identifies the sender; a Messaging Service picks the number itself.
    from_number: str = ""
    messaging_service_sid: str = ""
    # Where Twilio posts status callbacks: the gateway's public /webhooks/twilio/status URL.
    status_callback_url: str = ""
    base_url: str = "https://api.twilio.com"
    timeout_seconds: float = 15.0

    @model_validator(mode="after")
    def _sender(self) -> TwilioConfig:
        if not self.from_number and not self.messaging_service_sid:
            raise ValueError("one of from_number or messaging_service_sid is required")
        return self


class TwilioSmsProvider:
    """Creates one Twilio Message per send; provider_message_id is the Message SID."""

    def __init__(self, config: TwilioConfig, ctx: ProviderContext) -> None:
        self.config = config
        self.channel = ctx.channel
        self._bucket = config.bucket()
        self.client = Client(
            config.account_sid,
            config.auth_token.get_secret_value(),
            http_client=TwilioHttpClient(timeout=config.timeout_seconds),
        )
        # Every Api version builds its URLs from the domain's base_url, so this re-targets all calls.
        self.client.api.base_url = config.base_url.rstrip("/")

    async def send(self, msg: OutboundMessage) -> SendResult:
        if msg.channel != self.channel:
            raise PermanentProviderError(f"twilio provider for {self.channel} got a {msg.channel} message")
        await self._bucket.acquire()
        try:
            message = await asyncio.to_thread(self._create, msg)
        except TwilioRestException as exc:
            detail = f"twilio {exc.status} (code {exc.code}): {exc.msg}"
            if exc.status == 429 or exc.status >= 500:
                raise TransientProviderError(detail) from exc
            raise PermanentProviderError(detail) from exc
        except (requests.RequestException, TwilioException, OSError) as exc:
            raise TransientProviderError(f"twilio unreachable: {exc}") from exc
        if not message.sid:
            raise TransientProviderError("twilio accepted the message without returning a SID")
        return SendResult(message.sid, {"status": str(message.status or ""), "segments": message.num_segments})

    def _create(self, msg: OutboundMessage) -> Any:
        cfg = self.config
        kwargs: dict[str, Any] = {"to": msg.recipient, "body": msg.body}
        if cfg.messaging_service_sid:
            kwargs["messaging_service_sid"] = cfg.messaging_service_sid
        else:
            kwargs["from_"] = cfg.from_number
        if cfg.status_callback_url:
            kwargs["status_callback"] = cfg.status_callback_url
        return self.client.messages.create(**kwargs)

    def parse_event(self, payload: dict[str, Any]) -> DeliveryEvent | None:
        return parse_twilio_status(payload)

    async def close(self) -> None:
        session = getattr(self.client.http_client, "session", None)
        if session is not None:
            await asyncio.to_thread(session.close)
