"""LINE OA through the Messaging API with line-bot-sdk v3 (async client).

Every send carries an `X-Line-Retry-Key` derived from our idempotency key, so LINE itself refuses to
deliver a retried request twice: a 409 for an already accepted key means the first attempt went out.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from linebot.v3.messaging import (
    AsyncApiClient,
    AsyncMessagingApi,
    Configuration,
    MulticastRequest,
    PushMessageRequest,
    TextMessage,
)
from linebot.v3.messaging.exceptions import ApiException
from pydantic import Field, SecretStr

from retain_channels.providers.base import (
    DeliveryEvent,
    OutboundMessage,
    PermanentProviderError,
    ProviderContext,
    SendResult,
    TransientProviderError,
)
from retain_channels.providers.ratelimit import RateLimitConfig
from retain_channels.webhooks import parse_line_delivery

# Fixed namespace: the retry key for a given idempotency key must be the same in every process.
RETRY_KEY_NAMESPACE = uuid.UUID("8f7c2b1e-4b7a-5f55-9d1e-6a0c1f3b2d40")
MULTICAST_MAX_RECIPIENTS = 500
# LINE caps a text message at 5,000 characters.
TEXT_MAX_CHARS = 5000


def retry_key(workspace_id: str, idempotency_key: str, *, part: int | None = None) -> str:
    name = f"{workspace_id}\x00{idempotency_key}" + ("" if part is None else f"\x00{part}")
    return str(uuid.uuid5(RETRY_KEY_NAMESPACE, name))


class LineConfig(RateLimitConfig):
    channel_access_token: SecretStr
    base_url: str = "https://api.line.me"
    timeout_seconds: float = 15.0
    # LINE allows 2,000 push requests per second per channel; stay well below by default.
    rate_per_second: float = Field(default=200.0, ge=0.0)


@dataclass(frozen=True)
class LineQuota:
    """This month's message quota: `limit` is None when the plan has no cap."""

    limit: int | None
    used: int

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else max(self.limit - self.used, 0)

    def allows(self, messages: int) -> bool:
        return self.remaining is None or self.remaining >= messages


class LineMessagingProvider:
    """Pushes a text message to one LINE user id; `multicast` fans out to many in chunks of 500."""

    def __init__(self, config: LineConfig, ctx: ProviderContext) -> None:
        self.config = config
        self.channel = ctx.channel
        self._bucket = config.bucket()
        self._configuration = Configuration(
            host=config.base_url.rstrip("/"), access_token=config.channel_access_token.get_secret_value()
        )
        # Built on first use: the SDK opens an aiohttp session, which needs the running event loop.
        self._client: AsyncApiClient | None = None

    def _api(self) -> AsyncMessagingApi:
        if self._client is None:
            self._client = AsyncApiClient(self._configuration)
        return AsyncMessagingApi(self._client)

    async def send(self, msg: OutboundMessage) -> SendResult:
        if msg.channel != self.channel:
            raise PermanentProviderError(f"line provider for {self.channel} got a {msg.channel} message")
        if len(msg.body) > TEXT_MAX_CHARS:
            raise PermanentProviderError(f"LINE text messages are limited to {TEXT_MAX_CHARS} characters")
        key = retry_key(msg.workspace_id, msg.idempotency_key)
        request = PushMessageRequest(to=msg.recipient, messages=[TextMessage(text=msg.body)])
        await self._bucket.acquire()
        try:
            response = await self._api().push_message_with_http_info(
                request, x_line_retry_key=key, _request_timeout=self.config.timeout_seconds
            )
        except ApiException as exc:
            accepted = _already_accepted(exc)
            if accepted is None:
                raise _classify(exc) from exc
            return SendResult(accepted or key, {"retry_key": key, "replayed": True})
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise TransientProviderError(f"LINE unreachable: {exc}") from exc
        sent = response.data.sent_messages if response.data is not None else []
        message_id = sent[0].id if sent else _header(response.headers, "x-line-request-id") or key
        return SendResult(
            message_id,
            {"retry_key": key, "request_id": _header(response.headers, "x-line-request-id")},
        )

    async def multicast(self, recipients: Sequence[str], text: str, *, workspace_id: str,
                        idempotency_key: str) -> list[str]:
        """Send `text` to every recipient, at most 500 per request; returns LINE's request id per chunk.

        Each chunk has its own retry key (derived from the key and the chunk's position), so calling
        again with the same arguments after a partial failure re-sends only the chunks not yet accepted.
        """
        request_ids: list[str] = []
        unique = list(dict.fromkeys(recipients))
        for part, start in enumerate(range(0, len(unique), MULTICAST_MAX_RECIPIENTS)):
            chunk = unique[start : start + MULTICAST_MAX_RECIPIENTS]
            key = retry_key(workspace_id, idempotency_key, part=part)
            request = MulticastRequest(to=chunk, messages=[TextMessage(text=text)])
            await self._bucket.acquire()
            try:
                response = await self._api().multicast_with_http_info(
                    request, x_line_retry_key=key, _request_timeout=self.config.timeout_seconds
                )
                request_ids.append(_header(response.headers, "x-line-request-id") or key)
            except ApiException as exc:
                accepted = _already_accepted(exc)
                if accepted is None:
                    raise _classify(exc) from exc
                request_ids.append(accepted or key)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise TransientProviderError(f"LINE unreachable: {exc}") from exc
        return request_ids

    async def quota(self) -> LineQuota:
        """This month's target limit and consumption (GET /v2/bot/message/quota[/consumption])."""
        api = self._api()
        try:
            limit = await api.get_message_quota(_request_timeout=self.config.timeout_seconds)
            used = await api.get_message_quota_consumption(_request_timeout=self.config.timeout_seconds)
        except ApiException as exc:
            raise _classify(exc) from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise TransientProviderError(f"LINE unreachable: {exc}") from exc
        cap = limit.value if limit.type.value == "limited" else None
        return LineQuota(limit=cap, used=int(used.total_usage))

    def parse_event(self, payload: dict[str, Any]) -> DeliveryEvent | None:
        return parse_line_delivery(payload)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def _header(headers: Any, name: str) -> str:
    if not headers:
        return ""
    for key, value in dict(headers).items():
        if key.lower() == name:
            return str(value)
    return ""


def _body(exc: ApiException) -> dict[str, Any]:
    try:
        data = json.loads(exc.body or b"{}")
    except (ValueError, TypeError):
        return {}
    return data if isinstance(data, dict) else {}


def _already_accepted(exc: ApiException) -> str | None:
    """For a 409 on a retry key LINE already accepted: the id of what was sent ('' if not given).
    None for any other error."""
    if exc.status != 409:
        return None
    headers = exc.headers or {}
    accepted = _header(headers, "x-line-accepted-request-id")
    body = _body(exc)
    sent = body.get("sentMessages")
    if isinstance(sent, list) and sent and isinstance(sent[0], dict) and sent[0].get("id"):
        return str(sent[0]["id"])
    if accepted:
        return accepted
    # A 409 without the accepted-request marker is some other conflict, not our retry.
    message = str(body.get("message", "")).lower()
    return "" if "retry key" in message and "accepted" in message else None


def _classify(exc: ApiException) -> Exception:
    status = int(exc.status or 0)
    message = str(_body(exc).get("message") or exc.reason or "")
    detail = f"LINE {status}: {message}"
    if status == 429 and "monthly limit" in message.lower():
        # Waiting minutes will not refill a monthly quota.
        return PermanentProviderError(detail, reason="quota_exhausted")
    if status in (0, 429) or status >= 500:
        return TransientProviderError(detail)
    return PermanentProviderError(detail)
