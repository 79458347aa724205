from gateway_harness import Harness


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_settings_segments_and_roles(gw: Harness) -> None:
    gw.need("profile")
    ops = bearer(await gw.key("ws_p", "operator"))
    ingest = bearer(await gw.key("ws_p", "ingest"))
    response = await gw.client.post("/v1/track", headers=ingest, json={
        "userId": "u1", "event": "Order Completed", "properties": {"revenue": 6000},
        "timestamp": "2020-01-01T00:00:00Z", "messageId": "m1"})
    assert response.status_code == 200, response.text

    assert (await gw.client.get("/v1/profile-settings", headers=ops)).json()["lifecycle"]["churned_days"] == 365
    bad = await gw.client.put("/v1/profile-settings", headers=ops, json={"lifecycle": {"at_risk_days": 500}})
    assert bad.status_code == 422 and bad.json()["field"] == "lifecycle.at_risk_days"
    put = await gw.client.put("/v1/profile-settings", headers=ops, json={"lifecycle": {"churned_days": 10000}})
    assert put.status_code == 200 and put.json()["lifecycle"]["churned_days"] == 10000
    customer = (await gw.client.get("/v1/customers/u1", headers=ops)).json()
    assert customer["features"]["lifecycle_stage"] == "lapsed"

    forbidden = await gw.client.post("/v1/segments", headers=ingest, json={"name": "x", "expression": "frequency > 0"})
    assert forbidden.status_code == 403
    rejected = await gw.client.post("/v1/segments", headers=ops, json={"name": "x", "expression": "open('f')"})
    assert rejected.status_code == 422 and rejected.json()["field"] == "expression"
    created = await gw.client.post("/v1/segments", headers=ops, json={
        "name": "big_lapsed", "expression": "monetary_total > 5000 and lifecycle_stage == 'lapsed'"})
    assert created.status_code == 201 and created.json()["builtin"] is False
    customer = (await gw.client.get("/v1/customers/u1", headers=ops)).json()
    assert "big_lapsed" in customer["features"]["segments"]
    count = (await gw.client.get("/v1/segments/big_lapsed/count", headers=ops)).json()
    assert (count["members"], count["customers"]) == (1, 1)
    names = [s["name"] for s in (await gw.client.get("/v1/segments", headers=ops)).json()["segments"]]
    assert "big_lapsed" in names and "vip" in names
    assert (await gw.client.delete("/v1/segments/big_lapsed", headers=ops)).status_code == 204
    assert (await gw.client.delete("/v1/segments/big_lapsed", headers=ops)).status_code == 404


async def test_privacy_access_and_erasure(gw: Harness) -> None:
    gw.need("profile", "audit")
    ingest = bearer(await gw.key("ws_q", "ingest"))
    auditor = bearer(await gw.key("ws_q", "auditor"))
    ops = bearer(await gw.key("ws_q", "operator"))
    await gw.client.post("/v1/identify", headers=ingest, json={
        "userId": "u9", "traits": {"email": "nok@example.co.th", "name": "Nok"}, "messageId": "i1"})
    await gw.client.post("/v1/track", headers=ingest, json={
        "userId": "u9", "event": "Order Completed", "messageId": "o1",
        "properties": {"revenue": 250, "address": "Bangkok 10110"}})
    access = await gw.client.get("/v1/privacy/access/nok@example.co.th", headers=auditor)
    assert access.status_code == 200, access.text
    body = access.json()
    assert body["customer"]["traits"]["name"] == "Nok" and len(body["events"]) == 2 and body["erased_at"] is None
    assert (await gw.client.post("/v1/privacy/erasure", headers=auditor, json={"customer_id": "u9"})).status_code == 403
    erased = await gw.client.post("/v1/privacy/erasure", headers=ops, json={"customer_id": "u9"})
    assert erased.status_code == 200, erased.text
    cid = erased.json()["customer_id"]
    assert (await gw.client.get("/v1/customers/u9", headers=ops)).status_code == 404
    after = (await gw.client.get(f"/v1/privacy/access/{cid}", headers=auditor)).json()
    assert after["erased_at"] and after["customer"]["traits"] == {} and after["customer"]["identifiers"] == []
    order = next(e for e in after["events"] if e["message_id"] == "o1")
    assert order["properties"] == {"revenue": 250} and after["customer"]["features"]["monetary_total"] == 250
