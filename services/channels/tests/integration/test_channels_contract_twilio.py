"""Contract tests: the real twilio SDK, through our adapter, against a server validating Twilio's OpenAPI."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from retain_channels.providers.base import (
    OutboundMessage,
    PermanentProviderError,
    ProviderContext,
    TransientProviderError,
)
from retain_channels.providers.registry import default_registry
from retain_channels.providers.sms.twilio import TwilioSmsProvider
from sqlalchemy.ext.asyncio import async_sessionmaker
from support.openapi_mock import TWILIO_SPEC, ContractServer, Reply, TwilioResponder

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not TWILIO_SPEC.exists(), reason=f"{TWILIO_SPEC} not present"),
]

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
CALLBACK = "https://gateway.example.co.th/webhooks/twilio/status"


@pytest.fixture
def twilio() -> Iterator[tuple[ContractServer, TwilioResponder]]:
    responder = TwilioResponder()
    with ContractServer(TWILIO_SPEC, responder) as server:
        yield server, responder
        assert server.take_violations() == []


def provider(server: ContractServer, tmp_path: Path, **overrides: Any) -> TwilioSmsProvider:
    config: dict[str, Any] = {
        "account_sid": ACCOUNT_SID, "auth_token": "secret-token", "from_number": "+15005550006",
        "status_callback_url": CALLBACK, "base_url": server.url,
    }
    config.update(overrides)
    ctx = ProviderContext(channel="sms", var_dir=tmp_path, sessions=async_sessionmaker())
    built = default_registry().build("sms", "twilio", config, ctx)
    assert isinstance(built, TwilioSmsProvider)
    return built


def sms(body: str = "สวัสดีค่ะ รับส่วนลด 10% วันนี้", *, key: str = "k1") -> OutboundMessage:
    return OutboundMessage(message_id="msg_1", workspace_id="ws_1", idempotency_key=key, channel="sms",
                           recipient="+66810000001", subject="", body=body, locale="th")


async def test_send_posts_the_exact_form_and_returns_the_sid(twilio: Any, tmp_path: Path) -> None:
    server, _ = twilio
    adapter = provider(server, tmp_path)
    result = await adapter.send(sms())
    await adapter.close()

    assert len(server.requests) == 1
    req = server.requests[0]
    assert req.method == "POST"
    assert req.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert req.form() == {"To": "+66810000001", "From": "+15005550006",
                          "Body": "สวัสดีค่ะ รับส่วนลด 10% วันนี้", "StatusCallback": CALLBACK}
    assert req.header("Authorization").startswith("Basic ")
    assert result.provider_message_id.startswith("SM") and len(result.provider_message_id) == 34
    assert result.detail["status"] == "queued"


async def test_messaging_service_replaces_from(twilio: Any, tmp_path: Path) -> None:
    server, _ = twilio
    adapter = provider(server, tmp_path, from_number="", messaging_service_sid="MG" + "a" * 32,
                       status_callback_url="")
    result = await adapter.send(sms())
    form = server.requests[0].form()
    assert form == {"To": "+66810000001", "MessagingServiceSid": "MG" + "a" * 32,
                    "Body": "สวัสดีค่ะ รับส่วนลด 10% วันนี้"}
    assert result.detail["status"] == "accepted"


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [(429, 20429, TransientProviderError), (503, 20500, TransientProviderError),
     (400, 21211, PermanentProviderError), (401, 20003, PermanentProviderError)],
)
async def test_vendor_errors_map_to_retry_classes(
    twilio: Any, tmp_path: Path, status: int, code: int, error: type[Exception]
) -> None:
    server, responder = twilio
    responder.fail_next.append(Reply(status, {"code": code, "message": "scripted", "status": status}))
    adapter = provider(server, tmp_path)
    with pytest.raises(error, match=str(code)):
        await adapter.send(sms())
    assert len(server.requests) == 1


async def test_unreachable_twilio_is_transient(tmp_path: Path) -> None:
    with ContractServer(TWILIO_SPEC, TwilioResponder()) as server:
        url = server.url
    adapter = provider(server, tmp_path, base_url=url, timeout_seconds=2)
    with pytest.raises(TransientProviderError):
        await adapter.send(sms())


async def test_request_breaking_the_contract_is_rejected(twilio: Any, tmp_path: Path) -> None:
    server, _ = twilio
    # The spec pins AccountSid to ^AC[0-9a-fA-F]{32}$; the validator must catch a malformed one.
    adapter = provider(server, tmp_path, account_sid="AC-not-a-sid")
    with pytest.raises(PermanentProviderError, match="400"):
        await adapter.send(sms())
    violations = server.take_violations()
    assert len(violations) == 1 and "AccountSid" in violations[0]


def test_config_needs_a_sender(tmp_path: Path) -> None:
    ctx = ProviderContext(channel="sms", var_dir=tmp_path, sessions=async_sessionmaker())
    with pytest.raises(ValueError, match="from_number or messaging_service_sid"):
        default_registry().build("sms", "twilio", {"account_sid": ACCOUNT_SID, "auth_token": "t"}, ctx)
