"""Provider webhooks through the real suite: signature checks, delivery statuses to channels, audit and
profile, LINE follow/unfollow to consent.

Channels runs with its real Twilio and LINE adapters pointed at the OpenAPI-validating provider mocks
from services/channels/tests/support (configured through its RETAIN_CHANNELS_* environment), so the
messages the callbacks talk about were really sent through those providers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from gateway_harness import Harness, HarnessFactory
from retain.audit.v1 import audit_pb2
from retain.channels.v1 import channels_pb2
from retain.common.v1 import common_pb2
from retain.profile.v1 import profile_pb2
from retain_gateway.routes.webhooks import channels_stub, twilio_signature, verify_twilio
from twilio.request_validator import RequestValidator

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
WS = "ws_hooks"
ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "twilio-auth-token"
LINE_BOT = "U" + "b0" * 16
LINE_SECRET = "line-channel-secret"
PUBLIC = "https://retain.example.com"
LINE_USER = "U" + "4af4980629" * 3 + "ab"
PHONE = "+66810000001"


def _load_mock() -> Any:
    path = ROOT / "services" / "channels" / "tests" / "support" / "openapi_mock.py"
    spec = importlib.util.spec_from_file_location("channels_openapi_mock", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


mock = _load_mock()


@dataclass
class Hooks:
    h: Harness
    ingest_key: str
    customer_id: str
    twilio: Any
    line: Any

    @property
    def state(self) -> Any:
        return self.h.app.state.gateway

    async def dispatch(self, key: str, channel: common_pb2.Channel.ValueType, recipient: str) -> channels_pb2.Message:
        resp = await channels_stub(self.state).Dispatch(
            channels_pb2.DispatchRequest(
                workspace_id=WS,
                message=channels_pb2.Message(
                    idempotency_key=key, customer_id=self.customer_id, channel=channel, recipient=recipient,
                    purpose="marketing", body="สวัสดีค่ะ รับส่วนลด 10%", offer_id="off_save10", decision_id="dec_1",
                ),
            ),
            timeout=10,
        )
        assert resp.message.status == common_pb2.DELIVERY_STATUS_SENT, resp.message.error
        return resp.message

    async def message(self, message_id: str) -> channels_pb2.Message:
        resp = await channels_stub(self.state).GetMessage(
            channels_pb2.GetMessageRequest(workspace_id=WS, message_id=message_id), timeout=5
        )
        return resp.message

    async def audit_outcomes(self, message_id: str) -> list[str]:
        resp = await self.h.audit.ListRecords(
            audit_pb2.ListRecordsRequest(workspace_id=WS, customer_id=self.customer_id)
        )
        return [r.outcome for r in resp.records if r.message_id == message_id]

    async def profile_events(self, name: str) -> list[profile_pb2.Event]:
        resp = await self.state.profile.ListEvents(
            profile_pb2.ListEventsRequest(workspace_id=WS, customer_id=self.customer_id, page_size=200), timeout=5
        )
        return [e for e in resp.events if e.event == name]

    async def line_consent(self, purpose: str = "marketing") -> Any:
        resp = await self.state.profile.GetProfile(
            profile_pb2.GetProfileRequest(workspace_id=WS, customer_id=self.customer_id), timeout=5
        )
        return next(
            (c for c in resp.profile.consents if c.channel == common_pb2.CHANNEL_LINE and c.purpose == purpose), None
        )

    async def set_consent(self, status: str, purpose: str = "marketing") -> None:
        resp = await self.h.client.put(
            f"/v1/customers/{self.customer_id}/consents",
            json={"consents": [{"channel": "line", "purpose": purpose, "status": status, "source": "signup_form",
                                "lawful_basis": "consent", "policy_version": "2024-01"}]},
            headers={"Authorization": f"Bearer {self.ingest_key}"},
        )
        assert resp.status_code == 200, resp.text

    async def twilio_callback(self, form: dict[str, str], *, signature: str | None = None,
                              token: str = AUTH_TOKEN, url: str = f"{PUBLIC}/webhooks/twilio/status") -> Any:
        sig = RequestValidator(token).compute_signature(url, form) if signature is None else signature
        return await self.h.client.post(
            "/webhooks/twilio/status", content=urlencode(form),
            headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": sig},
        )

    async def line_callback(self, events: list[dict[str, Any]], *, secret: str = LINE_SECRET,
                            signature: str | None = None) -> Any:
        body = json.dumps({"destination": LINE_BOT, "events": events}, ensure_ascii=False).encode()
        sig = (base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
               if signature is None else signature)
        return await self.h.client.post(
            "/webhooks/line", content=body, headers={"Content-Type": "application/json", "X-Line-Signature": sig}
        )


@pytest.fixture
def providers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    twilio, line = mock.TwilioResponder(), mock.LineResponder()
    with mock.ContractServer(mock.TWILIO_SPEC, twilio) as tw, mock.ContractServer(mock.LINE_SPEC, line) as ln:
        monkeypatch.setenv("RETAIN_CHANNELS_PROVIDERS", json.dumps({"sms": "twilio", "line": "line"}))
        monkeypatch.setenv("RETAIN_CHANNELS_PROVIDER_CONFIG", json.dumps({
            "sms": {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": "+15005550006",
                    "base_url": tw.url, "status_callback_url": f"{PUBLIC}/webhooks/twilio/status"},
            "line": {"channel_access_token": "line-token", "base_url": ln.url},
        }))
        yield twilio, line
        assert tw.take_violations() == [] and ln.take_violations() == []


@pytest.fixture
async def hooks(make_harness: HarnessFactory, providers: tuple[Any, Any]) -> Hooks:
    h: Harness = await make_harness(
        webhook_secrets={
            "twilio": {ACCOUNT_SID: {"workspace_id": WS, "auth_token": AUTH_TOKEN}},
            "line": {LINE_BOT: {"workspace_id": WS, "channel_secret": LINE_SECRET}},
        },
        webhook_public_url=PUBLIC,
    )
    key = await h.key(WS, "ingest")
    resp = await h.client.post(
        "/v1/identify",
        json={"userId": "somchai-1", "traits": {"name": "สมชาย", "phone": PHONE, "line_user_id": LINE_USER}},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert resp.status_code == 200, resp.text
    return Hooks(h, key, resp.json()["customer_id"], *providers)


def now_ms() -> int:
    # LINE stamps events in ms; profile applies a consent change only if it is newer than the current one.
    return int(time.time() * 1000)


def status_form(sid: str, status: str, **extra: str) -> dict[str, str]:
    return {"AccountSid": ACCOUNT_SID, "MessageSid": sid, "SmsSid": sid, "MessageStatus": status,
            "SmsStatus": status, "To": PHONE, "From": "+15005550006", "ApiVersion": "2010-04-01", **extra}


# -- signatures --------------------------------------------------------------------------------------


def test_twilio_signature_matches_the_twilio_sdk() -> None:
    form = {"MessageSid": "SM1", "MessageStatus": "delivered", "Body": "สวัสดี & co", "AccountSid": ACCOUNT_SID}
    for url in (f"{PUBLIC}/webhooks/twilio/status", "https://h.example:8443/x?a=1&b=2"):
        sdk = RequestValidator(AUTH_TOKEN).compute_signature(url, form)
        assert twilio_signature(url, form.items(), AUTH_TOKEN) == sdk
        assert verify_twilio(url, form.items(), sdk, AUTH_TOKEN)
        assert not verify_twilio(url, form.items(), sdk, "another-token")
        assert not verify_twilio(url, [*form.items(), ("Extra", "1")], sdk, AUTH_TOKEN)
    # Twilio may sign with the default port spelled out.
    with_port = RequestValidator(AUTH_TOKEN).compute_signature("https://retain.example.com:443/w", form)
    assert verify_twilio("https://retain.example.com/w", form.items(), with_port, AUTH_TOKEN)


async def test_twilio_bad_signature_is_rejected_logged_and_not_processed(
    hooks: Hooks, caplog: pytest.LogCaptureFixture
) -> None:
    sent = await hooks.dispatch("sms-bad-sig", common_pb2.CHANNEL_SMS, PHONE)
    form = status_form(sent.provider_message_id, "delivered")
    caplog.set_level(logging.WARNING, logger="retain_gateway.routes.webhooks")

    cases = [
        await hooks.twilio_callback(form, token="not-the-token"),
        await hooks.twilio_callback(form, signature=""),
        # Signed for another URL than the public one Twilio called.
        await hooks.twilio_callback(form, url="http://gateway/webhooks/twilio/status"),
        await hooks.twilio_callback({**form, "AccountSid": "AC" + "9" * 32}),
    ]
    assert [r.status_code for r in cases] == [403, 403, 403, 403]
    assert cases[0].json()["error"] == "invalid_signature"
    lines = [r.getMessage() for r in caplog.records if "webhook_rejected" in r.getMessage()]
    rejected = [json.loads(line.split(" ", 2)[2]) for line in lines]
    assert [(r["provider"], r["reason"]) for r in rejected] == [
        ("twilio", "bad_signature"), ("twilio", "missing_signature"), ("twilio", "bad_signature"),
        ("twilio", "unknown_account"),
    ]
    assert (await hooks.message(sent.message_id)).status == common_pb2.DELIVERY_STATUS_SENT
    assert await hooks.audit_outcomes(sent.message_id) == ["queued", "sent"]


async def test_twilio_delivered_updates_channels_audit_and_profile_once(hooks: Hooks) -> None:
    sent = await hooks.dispatch("sms-1", common_pb2.CHANNEL_SMS, PHONE)
    assert sent.provider == "twilio" and sent.provider_message_id.startswith("SM")

    first = await hooks.twilio_callback(status_form(sent.provider_message_id, "delivered"))
    assert first.status_code == 200, first.text
    assert first.json()["results"] == [
        {"kind": "delivery", "outcome": "recorded", "message_id": sent.message_id, "status": "delivered"}
    ]
    again = await hooks.twilio_callback(status_form(sent.provider_message_id, "delivered"))
    assert again.json()["results"][0]["outcome"] == "duplicate"

    assert (await hooks.message(sent.message_id)).status == common_pb2.DELIVERY_STATUS_DELIVERED
    assert await hooks.audit_outcomes(sent.message_id) == ["queued", "sent", "delivered"]
    events = await hooks.profile_events("Message Delivered")
    assert len(events) == 1
    props = dict(events[0].properties)
    assert (props["channel"], props["message_id"], props["provider"]) == ("sms", sent.message_id, "twilio")
    assert events[0].message_id == f"chn:{sent.message_id}:delivered"
    features = await hooks.state.profile.GetFeatures(
        profile_pb2.GetFeaturesRequest(workspace_id=WS, customer_id=hooks.customer_id), timeout=5
    )
    assert features.features.channel_engagement["sms"].delivered == 1


async def test_twilio_intermediate_status_is_ignored_and_failure_is_reported(hooks: Hooks) -> None:
    sent = await hooks.dispatch("sms-2", common_pb2.CHANNEL_SMS, PHONE)
    sending = await hooks.twilio_callback(status_form(sent.provider_message_id, "sending"))
    assert sending.status_code == 200 and sending.json()["results"][0]["outcome"] == "ignored"
    unknown = await hooks.twilio_callback(status_form("SM" + "f" * 32, "delivered"))
    assert unknown.json()["results"][0]["outcome"] == "unknown_message"

    failed = await hooks.twilio_callback(
        status_form(sent.provider_message_id, "undelivered", ErrorCode="30003", ErrorMessage="Unreachable")
    )
    assert failed.json()["results"][0]["status"] == "failed"
    message = await hooks.message(sent.message_id)
    assert message.status == common_pb2.DELIVERY_STATUS_FAILED and "30003" in message.error
    assert await hooks.audit_outcomes(sent.message_id) == ["queued", "sent", "failed"]
    [event] = await hooks.profile_events("Message Failed")
    assert dict(event.properties)["status"] == "failed"


async def test_line_unfollow_withdraws_and_follow_restores_only_what_it_withdrew(hooks: Hooks) -> None:
    await hooks.set_consent("granted", "marketing")
    await hooks.set_consent("denied", "service")
    unfollow = {"type": "unfollow", "timestamp": now_ms(), "mode": "active",
                "source": {"type": "user", "userId": LINE_USER}, "webhookEventId": "01H0", "deliveryContext":
                {"isRedelivery": False}}

    resp = await hooks.line_callback([unfollow])
    assert resp.status_code == 200, resp.text
    assert resp.json()["results"] == [{"kind": "unfollow", "outcome": "consent_withdrawn", "message_id": "",
                                       "status": ""}]
    consent = await hooks.line_consent()
    assert consent.status == common_pb2.CONSENT_STATUS_WITHDRAWN and consent.source == "line:unfollow"
    check = await hooks.state.profile.CheckConsent(
        profile_pb2.CheckConsentRequest(workspace_id=WS, customer_id=hooks.customer_id,
                                        channel=common_pb2.CHANNEL_LINE, purpose="marketing"), timeout=5
    )
    assert not check.allowed
    # A redelivered unfollow finds nothing left to withdraw.
    assert (await hooks.line_callback([unfollow])).json()["results"][0]["outcome"] == "no_change"

    follow = {**unfollow, "type": "follow", "timestamp": now_ms() + 1000}
    resp = await hooks.line_callback([follow])
    assert resp.json()["results"][0]["outcome"] == "consent_restored"
    restored = await hooks.line_consent()
    assert restored.status == common_pb2.CONSENT_STATUS_GRANTED and restored.source == "line:follow"
    assert (restored.lawful_basis, restored.policy_version) == ("consent", "2024-01")
    # The purpose that was never granted stays denied.
    assert (await hooks.line_consent("service")).status == common_pb2.CONSENT_STATUS_DENIED


async def test_line_follow_never_grants_consent_that_was_not_given(hooks: Hooks) -> None:
    follow = {"type": "follow", "timestamp": now_ms(), "source": {"type": "user", "userId": LINE_USER}}
    assert (await hooks.line_callback([follow])).json()["results"][0]["outcome"] == "no_change"
    assert await hooks.line_consent() is None

    # Withdrawn through the brand, not by an unfollow: following again does not opt the customer back in.
    await hooks.set_consent("withdrawn")
    assert (await hooks.line_callback([follow])).json()["results"][0]["outcome"] == "no_change"
    assert (await hooks.line_consent()).status == common_pb2.CONSENT_STATUS_WITHDRAWN

    stranger = {**follow, "type": "unfollow", "source": {"type": "user", "userId": "U" + "0" * 32}}
    assert (await hooks.line_callback([stranger])).json()["results"][0]["outcome"] == "unknown_customer"


async def test_line_bad_signature_is_rejected_and_consent_untouched(
    hooks: Hooks, caplog: pytest.LogCaptureFixture
) -> None:
    await hooks.set_consent("granted")
    caplog.set_level(logging.WARNING, logger="retain_gateway.routes.webhooks")
    unfollow = {"type": "unfollow", "timestamp": now_ms(), "source": {"type": "user", "userId": LINE_USER}}

    forged = await hooks.line_callback([unfollow], secret="guessed-secret")
    unsigned = await hooks.line_callback([unfollow], signature="")
    assert (forged.status_code, unsigned.status_code) == (403, 403)
    assert sum("webhook_rejected" in r.getMessage() and '"line"' in r.getMessage() for r in caplog.records) == 2
    assert (await hooks.line_consent()).status == common_pb2.CONSENT_STATUS_GRANTED


async def test_line_delivery_event_and_verification_ping(hooks: Hooks) -> None:
    sent = await hooks.dispatch("line-1", common_pb2.CHANNEL_LINE, LINE_USER)
    assert sent.provider == "line" and len(hooks.line.delivered) == 1
    # The console's "Verify" button posts an empty event list.
    ping = await hooks.line_callback([])
    assert ping.status_code == 200 and ping.json() == {"received": 0, "results": []}

    delivery = {"type": "delivery", "timestamp": now_ms(), "mode": "active",
                "delivery": {"data": sent.provider_message_id}}
    other = {"type": "message", "timestamp": now_ms(), "message": {"type": "text", "text": "hi"}}
    resp = await hooks.line_callback([delivery, other])
    assert [r["outcome"] for r in resp.json()["results"]] == ["recorded", "ignored"]
    assert (await hooks.message(sent.message_id)).status == common_pb2.DELIVERY_STATUS_DELIVERED
    assert await hooks.audit_outcomes(sent.message_id) == ["queued", "sent", "delivered"]
    [event] = await hooks.profile_events("Message Delivered")
    assert dict(event.properties)["channel"] == "line"


async def test_webhooks_are_in_the_openapi_document_without_api_key(gw: Harness) -> None:
    doc = (await gw.client.get("/openapi.json")).json()
    twilio = doc["paths"]["/webhooks/twilio/status"]["post"]
    line = doc["paths"]["/webhooks/line"]["post"]
    assert "application/x-www-form-urlencoded" in twilio["requestBody"]["content"]
    assert "application/json" in line["requestBody"]["content"]
    assert [p["name"] for p in twilio["parameters"]] == ["X-Twilio-Signature"]
    assert [p["name"] for p in line["parameters"]] == ["X-Line-Signature"]
    assert "403" in twilio["responses"] and "403" in line["responses"]
    assert not twilio.get("security") and not line.get("security")
    # And no key is asked for: an unconfigured gateway answers 403 (signature), not 401 (API key).
    resp = await gw.client.post("/webhooks/line", content=b'{"events": []}', headers={"X-Line-Signature": "x"})
    assert resp.status_code == 403
