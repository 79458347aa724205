"""Contract tests: the real line-bot-sdk v3, through our adapter, against a server validating LINE's OpenAPI."""

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from linebot.v3.messaging import AsyncApiClient, AsyncMessagingApi, Configuration, PushMessageRequest, TextMessage
from linebot.v3.messaging.exceptions import ApiException
from retain_channels.providers.base import (
    OutboundMessage,
    PermanentProviderError,
    ProviderContext,
    TransientProviderError,
)
from retain_channels.providers.line.messaging_api import LineMessagingProvider, retry_key
from retain_channels.providers.registry import default_registry
from sqlalchemy.ext.asyncio import async_sessionmaker
from support.openapi_mock import LINE_SPEC, ContractServer, LineResponder, Reply

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not LINE_SPEC.exists(), reason=f"{LINE_SPEC} not present"),
]

USER = "U" + "4af4980629" * 3 + "ab"
TOKEN = "channel-token"


class Line:
    def __init__(self, server: ContractServer, responder: LineResponder, adapter: LineMessagingProvider) -> None:
        self.server = server
        self.responder = responder
        self.adapter = adapter


@pytest.fixture
async def line(tmp_path: Path) -> AsyncIterator[Line]:
    responder = LineResponder(quota_limit=1000)
    with ContractServer(LINE_SPEC, responder) as server:
        ctx = ProviderContext(channel="line", var_dir=tmp_path, sessions=async_sessionmaker())
        adapter = default_registry().build(
            "line", "line", {"channel_access_token": TOKEN, "base_url": server.url}, ctx
        )
        assert isinstance(adapter, LineMessagingProvider)
        yield Line(server, responder, adapter)
        await adapter.close()
        assert server.take_violations() == []


def line_msg(key: str = "k1", body: str = "สวัสดีค่ะ คุณสมชาย") -> OutboundMessage:
    return OutboundMessage(message_id="msg_1", workspace_id="ws_1", idempotency_key=key, channel="line",
                           recipient=USER, subject="", body=body, locale="th")


async def test_push_sends_the_exact_request_with_a_derived_retry_key(line: Line) -> None:
    result = await line.adapter.send(line_msg())

    assert len(line.server.requests) == 1
    req = line.server.requests[0]
    assert (req.method, req.path) == ("POST", "/v2/bot/message/push")
    assert req.json() == {"to": USER, "messages": [{"type": "text", "text": "สวัสดีค่ะ คุณสมชาย"}],
                          "notificationDisabled": False}
    assert req.header("Authorization") == f"Bearer {TOKEN}"
    key = req.header("X-Line-Retry-Key")
    assert uuid.UUID(key).version == 5
    assert key == retry_key("ws_1", "k1") and key != retry_key("ws_2", "k1") and key != retry_key("ws_1", "k2")
    assert result.provider_message_id.isdigit()
    assert result.detail["retry_key"] == key and result.detail["request_id"]
    assert line.responder.delivered == [(USER, "สวัสดีค่ะ คุณสมชาย")]


async def test_retry_of_an_accepted_key_is_a_success_not_a_second_delivery(line: Line) -> None:
    first = await line.adapter.send(line_msg())
    again = await line.adapter.send(line_msg())

    assert [r.header("X-Line-Retry-Key") for r in line.server.requests] == [retry_key("ws_1", "k1")] * 2
    assert len(line.responder.delivered) == 1
    assert again.provider_message_id == first.provider_message_id
    assert again.detail["replayed"] is True


@pytest.mark.parametrize(
    ("status", "message", "error", "reason"),
    [
        (429, "Too many requests", TransientProviderError, ""),
        (500, "Internal error", TransientProviderError, ""),
        (400, "The request body has 1 error(s)", PermanentProviderError, ""),
        (403, "Access to this API is not available", PermanentProviderError, ""),
        (429, "You have reached your monthly limit.", PermanentProviderError, "quota_exhausted"),
        (409, "Conflict without a retry key", PermanentProviderError, ""),
    ],
)
async def test_vendor_errors_map_to_retry_classes(
    line: Line, status: int, message: str, error: type[Exception], reason: str
) -> None:
    line.responder.fail_next.append(Reply(status, {"message": message}))
    with pytest.raises(error, match=str(status)) as caught:
        await line.adapter.send(line_msg())
    assert getattr(caught.value, "reason", "") == reason


async def test_multicast_chunks_at_500_with_one_retry_key_per_chunk(line: Line) -> None:
    users = [f"U{i:032x}" for i in range(1203)]
    ids = await line.adapter.multicast(users + users[:5], "โปรโมชั่น", workspace_id="ws_1", idempotency_key="camp_1")

    reqs = line.server.requests
    assert [r.path for r in reqs] == ["/v2/bot/message/multicast"] * 3
    assert [len(r.json()["to"]) for r in reqs] == [500, 500, 203]
    assert [u for r in reqs for u in r.json()["to"]] == users
    keys = [r.header("X-Line-Retry-Key") for r in reqs]
    assert keys == [retry_key("ws_1", "camp_1", part=i) for i in range(3)] and len(set(keys)) == 3
    assert len(ids) == 3
    assert len(line.responder.delivered) == 1203

    # A repeat after a partial failure re-sends nothing already accepted.
    await line.adapter.multicast(users, "โปรโมชั่น", workspace_id="ws_1", idempotency_key="camp_1")
    assert len(line.responder.delivered) == 1203


async def test_quota_reports_limit_and_usage(line: Line) -> None:
    await line.adapter.send(line_msg("k1"))
    await line.adapter.send(line_msg("k2"))
    quota = await line.adapter.quota()
    assert (quota.limit, quota.used, quota.remaining) == (1000, 2, 998)
    assert quota.allows(998) and not quota.allows(999)
    assert [r.path for r in line.server.requests][-2:] == ["/v2/bot/message/quota", "/v2/bot/message/quota/consumption"]

    line.responder.quota_limit = None
    unlimited = await line.adapter.quota()
    assert unlimited.limit is None and unlimited.allows(10**9)


async def test_request_breaking_the_contract_is_rejected(line: Line) -> None:
    # The SDK itself, with a retry key that is not a UUID: the spec requires format uuid.
    async with AsyncApiClient(Configuration(host=line.server.url, access_token=TOKEN)) as client:
        with pytest.raises(ApiException) as caught:
            await AsyncMessagingApi(client).push_message(
                PushMessageRequest(to=USER, messages=[TextMessage(text="hi")]), x_line_retry_key="not-a-uuid"
            )
    assert caught.value.status == 400
    violations = line.server.take_violations()
    assert len(violations) == 1 and "X-Line-Retry-Key" in violations[0]
    assert line.responder.delivered == []


async def test_message_missing_its_subtype_fields_is_rejected(line: Line) -> None:
    # Only the discriminator expansion makes a text message without `text` a contract violation.
    async with AsyncApiClient(Configuration(host=line.server.url, access_token=TOKEN)) as client:
        with pytest.raises(ApiException):
            await client.call_api(
                "/v2/bot/message/push", "POST", header_params={"Content-Type": "application/json"},
                body={"to": USER, "messages": [{"type": "text"}]}, auth_settings=["Bearer"],
                response_types_map={"200": "PushMessageResponse"},
            )
    assert len(line.server.take_violations()) == 1


async def test_unreachable_line_is_transient(tmp_path: Path) -> None:
    with ContractServer(LINE_SPEC, LineResponder()) as server:
        url = server.url
    ctx = ProviderContext(channel="line", var_dir=tmp_path, sessions=async_sessionmaker())
    adapter: Any = default_registry().build("line", "line", {"channel_access_token": TOKEN, "base_url": url}, ctx)
    try:
        with pytest.raises(TransientProviderError):
            await adapter.send(line_msg())
    finally:
        await adapter.close()
