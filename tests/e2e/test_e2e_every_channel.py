"""One message on each channel through the running suite: seen by the log provider and in the audit trail."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.e2e.conftest import RunningSuite, issue_key

pytestmark = pytest.mark.e2e
CHANNELS = ("email", "sms", "line", "push")


def test_one_message_per_channel_reaches_the_provider_and_audit(suite: RunningSuite) -> None:
    user = f"ch-{uuid.uuid4().hex[:8]}"
    offer_id = f"e2e_all_channels_{uuid.uuid4().hex[:6]}"
    # A workspace of its own: the first offer it creates replaces the demo catalogue other tests rely on.
    key = issue_key(suite.stack, f"ws_channels_{uuid.uuid4().hex[:6]}", "admin")
    with suite.client(key) as client:
        r = client.post("/v1/offers", json={
            "offer_id": offer_id, "name": "Thank-you note", "play_type": "engagement", "channels": list(CHANNELS),
            "purpose": "marketing", "value": 50, "prior_propensity": 0.2,
            "templates": [{"channel": ch, "locale": "en", "subject": "Thank you", "body": "Hi {{ first_name }}"}
                          for ch in CHANNELS],
        })
        assert r.status_code in (200, 201), r.text
        r = client.post("/v1/identify", json={
            "userId": user,
            "traits": {"first_name": "Malee", "email": f"{user}@example.co.th", "phone": "0898765432",
                       "line_user_id": "U" + uuid.uuid4().hex},
            "context": {"device": {"token": f"push-{user}"}},
        })
        assert r.status_code == 200, r.text
        r = client.put(f"/v1/customers/{user}/consents", json={"consents": [
            {"channel": ch, "purpose": "marketing", "status": "granted", "source": "e2e"} for ch in CHANNELS
        ]})
        assert r.status_code == 200, r.text
        message_ids = {}
        for ch in CHANNELS:
            sent = client.post("/v1/messages", json={"customer_id": user, "channel": ch, "offer_id": offer_id,
                                                     "purpose": "marketing", "idempotency_key": f"{user}-{ch}"})
            assert sent.json()["status"] == "sent", (ch, sent.text)
            message_ids[ch] = sent.json()["message_id"]
        records = client.get("/v1/audit/records", params={"customer_id": user, "kind": "message",
                                                          "outcome": "sent"}).json()["records"]
    assert {r["channel"] for r in records} == set(CHANNELS)
    lines = [json.loads(line) for line in (suite.stack.var_dir / "channels-outbox.jsonl").read_text().splitlines()]
    delivered = {line.get("message_id"): line for line in lines}
    for ch, message_id in message_ids.items():
        assert message_id in delivered, f"{ch} message not written by the log provider"
        assert "Malee" in json.dumps(delivered[message_id], ensure_ascii=False)
