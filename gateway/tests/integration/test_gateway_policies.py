"""/v1/policies (versioned, audited, operator-only) and POST /v1/decisions with dispatch."""

from gateway_harness import Harness


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_policy_round_trip_versioned_and_audited(gw: Harness) -> None:
    gw.need("decision", "audit")
    operator = await gw.key("ws_p", "operator")
    app = await gw.key("ws_p", "app")
    current = await gw.client.get("/v1/policies", headers=bearer(operator))
    assert current.status_code == 200 and current.json()["version"] == 0
    assert current.json()["default_time_zone"] == "Asia/Bangkok"

    body = {
        "channel_caps": {"sms": {"per_day": 1, "per_week": 3}},
        "global_cap": {"per_week": 5},
        "quiet_hours": {"start": "21:00", "end": "08:00", "mode": "drop"},
        "control_group_share": 0.1,
        "journey_holdouts": {"welcome": 0.2},
        "offer_rules": {"save_15_percent": {"per_day": 1, "decline_limit": 2, "decline_window_days": 14}},
    }
    response = await gw.client.put("/v1/policies", headers=bearer(operator), json=body)
    assert response.status_code == 200, response.text
    stored = response.json()
    assert stored["version"] == 1 and stored["channel_caps"]["sms"] == {"per_day": 1, "per_week": 3}
    assert stored["global_cap"] == {"per_day": None, "per_week": 5}
    assert stored["quiet_hours"]["mode"] == "drop" and stored["offer_rules"]["save_15_percent"]["decline_limit"] == 2
    assert stored["updated_by"]

    response = await gw.client.put("/v1/policies", headers=bearer(operator), json={"expected_version": 1})
    assert response.status_code == 200 and response.json()["version"] == 2
    assert response.json()["quiet_hours"] is None
    response = await gw.client.put("/v1/policies", headers=bearer(operator), json={"expected_version": 1})
    assert response.status_code == 409 and response.json()["field"] == "expected_version"
    old = await gw.client.get("/v1/policies?version=1", headers=bearer(operator))
    assert old.json()["control_group_share"] == 0.1

    bad = await gw.client.put(
        "/v1/policies", headers=bearer(operator), json={"quiet_hours": {"start": "25:00", "end": "08:00"}}
    )
    assert bad.status_code == 422 and bad.json()["field"].startswith("quiet_hours")
    bad = await gw.client.put("/v1/policies", headers=bearer(operator), json={"default_time_zone": "Mars/Base"})
    assert bad.status_code == 422 and bad.json()["field"] == "policy.default_time_zone"
    assert (await gw.client.put("/v1/policies", headers=bearer(app), json={})).status_code == 403
    assert (await gw.client.get("/v1/policies", headers=bearer(app))).status_code == 403

    records = (await gw.client.get("/v1/audit/records?kind=config", headers=bearer(operator))).json()["records"]
    assert sorted(r["outcome"] for r in records if r["outcome"] == "policy_set") == ["policy_set", "policy_set"]


async def test_decision_with_dispatch_sends_through_governance(gw: Harness) -> None:
    gw.need("decision", "profile", "channels", "audit")
    ingest = await gw.key("ws_d", "ingest")
    operator = await gw.key("ws_d", "operator")
    await gw.client.post(
        "/v1/identify", headers=bearer(ingest),
        json={"userId": "u-disp", "traits": {"email": "u-disp@example.co.th", "first_name": "Nok"}},
    )
    offer = {
        "offer_id": "gw_note", "name": "Note", "play_type": "engagement", "channels": ["email"],
        "purpose": "marketing", "value": 800.0, "cost": 10.0, "prior_propensity": 0.3, "active": True,
        "templates": [{"channel": "email", "locale": "en", "subject": "Hi", "body": "Hi {{ first_name }}"}],
    }
    await gw.client.get("/v1/offers", headers=bearer(operator))  # seed the demo catalogue first
    assert (await gw.client.post("/v1/offers", headers=bearer(operator), json=offer)).status_code == 200
    request = {"customer_id": "u-disp", "channels": ["email"], "dispatch": True, "idempotency_key": "gw-1"}

    # No consent yet: every candidate is dropped, nothing is sent, and the answer says why.
    response = await gw.client.post("/v1/decisions", headers=bearer(operator), json=request)
    assert response.status_code == 200, response.text
    assert response.json()["send"]["status"] == "suppressed" and not response.json()["actions"]
    assert "no_consent" in {s["rule"] for s in response.json()["suppressed"]}

    consent = {"consents": [{"channel": "email", "purpose": "marketing", "status": "granted", "source": "app",
                             "lawful_basis": "consent", "policy_version": "v1"}]}
    assert (await gw.client.put("/v1/customers/u-disp/consents", headers=bearer(operator),
                                json=consent)).status_code == 200
    await gw.client.put("/v1/policies", headers=bearer(operator), json={"channel_caps": {"email": {"per_day": 1}},
                                                                        "contact_slot_minutes": 0})
    request["idempotency_key"] = "gw-2"
    response = await gw.client.post("/v1/decisions", headers=bearer(operator), json=request)
    out = response.json()
    assert out["send"]["status"] in ("sent", "queued"), out
    assert out["send"]["message_id"] and out["actions"][0]["channel"] == "email"

    request["idempotency_key"] = "gw-3"
    capped = (await gw.client.post("/v1/decisions", headers=bearer(operator), json=request)).json()
    assert capped["send"]["status"] == "suppressed" and "frequency_cap" in {s["rule"] for s in capped["suppressed"]}

    missing = await gw.client.post(
        "/v1/decisions", headers=bearer(operator), json={"customer_id": "u-disp", "dispatch": True}
    )
    assert missing.status_code == 422 and missing.json()["field"] == "idempotency_key"
