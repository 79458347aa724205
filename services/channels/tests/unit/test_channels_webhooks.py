import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime

from retain_channels.providers.base import DeliveryEvent
from retain_channels.webhooks import (
    LineFollowChange,
    parse_line_delivery,
    parse_line_events,
    parse_twilio_status,
    verify_line_signature,
    verify_twilio_signature,
)
from twilio.request_validator import RequestValidator

URL = "https://gw.brand.co.th/webhooks/twilio/status?ws=ws_1"
PARAMS = {"MessageSid": "SM" + "a" * 32, "MessageStatus": "delivered", "AccountSid": "AC" + "b" * 32}


def test_twilio_signature_accepts_the_real_one_and_rejects_tampering() -> None:
    signature = RequestValidator("tok").compute_signature(URL, PARAMS)
    assert verify_twilio_signature(URL, PARAMS, signature, "tok")
    assert not verify_twilio_signature(URL, PARAMS, signature, "other-token")
    assert not verify_twilio_signature(URL, {**PARAMS, "MessageStatus": "failed"}, signature, "tok")
    assert not verify_twilio_signature(URL.replace("ws_1", "ws_2"), PARAMS, signature, "tok")
    assert not verify_twilio_signature(URL, PARAMS, "", "tok")
    assert not verify_twilio_signature(URL, PARAMS, signature, "")


def line_sig(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def test_line_signature_is_hmac_sha256_of_the_raw_body() -> None:
    body = json.dumps({"destination": "U1", "events": []}, ensure_ascii=False).encode()
    assert verify_line_signature(body, line_sig(body, "secret"), "secret")
    assert not verify_line_signature(body, line_sig(body, "secret"), "other")
    assert not verify_line_signature(body + b" ", line_sig(body, "secret"), "secret")
    assert not verify_line_signature(body, "", "secret")


def test_twilio_statuses_map_onto_ours() -> None:
    def status(raw: str, **extra: str) -> DeliveryEvent | None:
        return parse_twilio_status({"MessageSid": "SM1", "MessageStatus": raw, **extra})

    assert status("delivered") == DeliveryEvent("SM1", "delivered")
    assert status("sent") == DeliveryEvent("SM1", "sent")
    assert status("read") == DeliveryEvent("SM1", "opened")
    assert status("undelivered", ErrorCode="30003", ErrorMessage="Unreachable handset") == DeliveryEvent(
        "SM1", "failed", error="twilio 30003: Unreachable handset"
    )
    assert status("failed", ErrorCode="30008").error == "twilio 30008"  # type: ignore[union-attr]
    for ignored in ("queued", "accepted", "sending", "scheduled", "bogus"):
        assert status(ignored) is None
    assert parse_twilio_status({"MessageStatus": "delivered"}) is None


def test_line_events_follow_unfollow_and_delivery() -> None:
    payload = {
        "destination": "Ubot",
        "events": [
            {"type": "unfollow", "timestamp": 1700000000000, "source": {"type": "user", "userId": "U1"}},
            {"type": "follow", "timestamp": 1700000001000, "source": {"type": "user", "userId": "U2"}},
            {"type": "message", "source": {"type": "user", "userId": "U3"}, "message": {"type": "text"}},
            {"type": "delivery", "timestamp": 1700000002000, "delivery": {"data": "pmid_9"}},
            {"type": "unfollow", "source": {"type": "group", "groupId": "G1"}},
            "garbage",
        ],
    }
    events = parse_line_events(payload)
    assert events == [
        LineFollowChange("U1", False, datetime.fromtimestamp(1700000000, UTC), "Ubot"),
        LineFollowChange("U2", True, datetime.fromtimestamp(1700000001, UTC), "Ubot"),
        DeliveryEvent("pmid_9", "delivered", datetime.fromtimestamp(1700000002, UTC)),
    ]
    first, second = events[0], events[1]
    assert isinstance(first, LineFollowChange) and first.consent_status == "withdrawn"
    assert isinstance(second, LineFollowChange) and second.consent_status == ""
    assert parse_line_delivery(payload) == events[2]
    assert parse_line_events({"events": "nope"}) == [] and parse_line_delivery({}) is None
