"""/v1/journeys: definitions (versioned, audited, operator-only), templates and the report."""

from gateway_harness import Harness


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_journeys_templates_and_report(gw: Harness) -> None:
    gw.need("decision", "audit")
    operator = await gw.key("ws_jr", "operator")
    auditor = await gw.key("ws_jr", "auditor")
    app = await gw.key("ws_jr", "app")
    await gw.client.get("/v1/offers", headers=bearer(operator))  # seed the demo catalogue first

    templates = await gw.client.get("/v1/journeys/templates", headers=bearer(operator))
    assert templates.status_code == 200, templates.text
    names = {t["name"] for t in templates.json()}
    assert len(names) == 10 and "cart_abandonment" in names
    installed = await gw.client.post("/v1/journeys/templates/cart_abandonment", headers=bearer(operator))
    assert installed.status_code == 200, installed.text
    assert installed.json()["version"] == 1 and installed.json()["definition"]["trigger"]["event"] == "Checkout Started"
    missing = await gw.client.post("/v1/journeys/templates/no_such", headers=bearer(operator))
    assert missing.status_code == 404 and missing.json()["field"] == "template"

    definition = {
        "journey_id": "vip_note", "name": "VIP note", "trigger": {"kind": "event", "event": "Order Completed",
                                                                  "condition": "event_revenue >= 5000"},
        "steps": [{"step_id": "note", "kind": "send", "offer_id": "double_points_weekend", "channels": ["line"]}],
    }
    first = await gw.client.post("/v1/journeys", headers=bearer(operator), json=definition)
    assert first.status_code == 200, first.text
    assert first.json()["version"] == 1
    definition["steps"].insert(0, {"step_id": "pause", "kind": "wait", "hours": 2})
    second = await gw.client.post("/v1/journeys", headers=bearer(operator), json=definition)
    assert second.json()["version"] == 2 and second.json()["updated_by"]
    old = await gw.client.get("/v1/journeys/vip_note?version=1", headers=bearer(auditor))
    assert old.status_code == 200 and [s["step_id"] for s in old.json()["definition"]["steps"]] == ["note"]
    listed = await gw.client.get("/v1/journeys", headers=bearer(operator))
    assert sorted((j["journey_id"], j["version"]) for j in listed.json()) == [("cart_abandonment", 1), ("vip_note", 2)]

    bad = dict(definition, steps=[{"step_id": "note", "kind": "send", "offer_id": "nope", "channels": ["line"]}])
    response = await gw.client.post("/v1/journeys", headers=bearer(operator), json=bad)
    assert response.status_code == 422 and response.json()["field"] == "journey.steps[0].offer_id"
    assert (await gw.client.get("/v1/journeys/unknown", headers=bearer(operator))).status_code == 404

    report = await gw.client.get("/v1/journeys/vip_note/report", headers=bearer(auditor))
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["entered"] == 0 and [s["step_id"] for s in body["steps"]] == ["pause", "note"]
    assert body["lift"] == 0.0 and body["lift_ci_low"] == 0.0

    assert (await gw.client.post("/v1/journeys", headers=bearer(auditor), json=definition)).status_code == 403
    assert (await gw.client.get("/v1/journeys", headers=bearer(app))).status_code == 403
    records = (await gw.client.get("/v1/audit/records?kind=config", headers=bearer(operator))).json()["records"]
    assert sum(1 for r in records if r["outcome"] == "journey_upserted") == 3
