"""The foundation flow, through real processes over gRPC, and one request = one trace."""

from __future__ import annotations

import secrets
import time
import uuid

import pytest

from tests.e2e.conftest import RunningSuite, issue_key

pytestmark = pytest.mark.e2e
SERVER = 2


def test_health_reports_every_service(suite: RunningSuite) -> None:
    with suite.client() as client:
        reply = client.get("/healthz")
    assert reply.status_code == 200, reply.text
    services = reply.json()["services"]
    assert {"profile", "scoring", "decision", "channels", "audit"} <= set(services)
    assert all(status == "SERVING" for name, status in services.items() if name != "database")


def test_first_flow_end_to_end(suite: RunningSuite) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    with suite.client() as client:
        # 1. track + identify
        for i, revenue in enumerate([1200.0, 800.0]):
            r = client.post("/v1/track", json={
                "userId": user, "event": "Order Completed", "messageId": f"{user}-o{i}",
                "properties": {"revenue": revenue, "category": "skincare"},
                "timestamp": f"2026-0{i + 1}-15T10:00:00+07:00",
            })
            assert r.status_code == 200, r.text
        r = client.post("/v1/identify", json={
            "userId": user, "messageId": f"{user}-id",
            "traits": {"first_name": "Suda", "email": f"{user}@example.co.th", "phone": "0812345678"},
        })
        assert r.status_code == 200, r.text
        # a replayed event changes nothing
        client.post("/v1/track", json={"userId": user, "event": "Order Completed", "messageId": f"{user}-o0",
                                       "properties": {"revenue": 99999}})

        # 2. profile with events count and last seen
        r = client.get(f"/v1/customers/{user}")
        assert r.status_code == 200, r.text
        profile = r.json()
        customer_id = profile["customer_id"]
        assert customer_id.startswith("cus_")
        assert profile["events_count"] == 3
        assert profile["last_seen"]
        assert profile["features"]["monetary_total"] == pytest.approx(2000.0)

        # 3. consent per channel and purpose
        r = client.put(f"/v1/customers/{user}/consents", json={"consents": [
            {"channel": "sms", "purpose": "marketing", "status": "granted", "source": "e2e:form"},
        ]})
        assert r.status_code == 200, r.text
        consents = {(c["channel"], c["purpose"]): c["status"] for c in r.json()["consents"]}
        assert consents[("sms", "marketing")] == "granted"

        # 4. next-best-actions (gateway -> decision -> profile + scoring)
        r = client.get(f"/v1/customers/{user}/next-best-actions", params={"placement": "home", "limit": 3})
        assert r.status_code == 200, r.text
        nba = r.json()
        why = [(s["offer_id"], s["rule"], s["detail"]) for s in nba["suppressed"]]
        assert nba["decision_id"] and 1 <= len(nba["actions"]) <= 3, why
        assert all(a["reason"] for a in nba["actions"])
        ranks = [a["score"]["expected_value"] for a in nba["actions"]]
        assert ranks == sorted(ranks, reverse=True)

        # 5. operator send: consented channel goes out once; a channel without consent is suppressed
        offers = client.get("/v1/offers").json()["offers"]
        sms_offer = next(o for o in offers if "sms" in o["channels"])
        body = {"customer_id": user, "channel": "sms", "offer_id": sms_offer["offer_id"], "purpose": "marketing",
                "idempotency_key": f"{user}-send-1"}
        sent = client.post("/v1/messages", json=body)
        assert sent.status_code in (200, 202), sent.text
        assert sent.json()["status"] in ("sent", "queued") and sent.json()["message_id"]
        again = client.post("/v1/messages", json=body)
        assert again.json()["message_id"] == sent.json()["message_id"]
        assert again.json()["status"] == "duplicate"
        email_offer = next(o for o in offers if "email" in o["channels"])
        suppressed = client.post("/v1/messages", json={**body, "channel": "email", "offer_id": email_offer["offer_id"],
                                                       "idempotency_key": f"{user}-send-2"})
        assert suppressed.json()["status"] == "suppressed", suppressed.text

        # 6. audit holds the decisions and messages, and the chain verifies
        r = client.get("/v1/audit/records", params={"customer_id": user, "limit": 100})
        assert r.status_code == 200, r.text
        records = r.json()["records"]
        kinds = {(rec["kind"], rec["outcome"]) for rec in records}
        assert ("decision", "decided") in kinds
        assert ("message", "sent") in kinds
        assert ("message", "suppressed") in kinds
        assert ("consent", "granted") in kinds
        assert all(rec["customer_id"] == customer_id for rec in records)
        verify = client.get("/v1/audit/verify").json()
        assert verify["ok"] is True and verify["records_checked"] >= len(records)


def test_workspaces_are_isolated(suite: RunningSuite) -> None:
    user = f"iso-{uuid.uuid4().hex[:8]}"
    with suite.client() as client:
        assert client.post("/v1/track", json={"userId": user, "event": "App Opened"}).status_code == 200
    other = issue_key(suite.stack, f"ws_other_{uuid.uuid4().hex[:6]}", "admin")
    with suite.client(other) as client:
        assert client.get(f"/v1/customers/{user}").status_code == 404
        assert client.get("/v1/audit/records", params={"customer_id": user}).json()["records"] == []


def test_one_request_is_one_trace_with_correct_parents(suite: RunningSuite) -> None:
    user = f"tr-{uuid.uuid4().hex[:8]}"
    with suite.client() as client:
        client.post("/v1/track", json={"userId": user, "event": "Order Completed",
                                       "properties": {"revenue": 500}})
        trace_id = secrets.token_hex(16)
        root_span = secrets.token_hex(8)
        r = client.get(f"/v1/customers/{user}/next-best-actions", params={"placement": "home"},
                       headers={"traceparent": f"00-{trace_id}-{root_span}-01"})
        assert r.status_code == 200, r.text

    expected = {"gateway", "decision", "profile", "scoring", "audit"}
    deadline = time.monotonic() + 15
    spans = suite.otlp.trace(trace_id)
    while time.monotonic() < deadline and not expected <= {s.service for s in spans}:
        time.sleep(0.2)
        spans = suite.otlp.trace(trace_id)
    assert expected <= {s.service for s in spans}, sorted({s.service for s in spans})
    ids = {s.span_id for s in spans}
    for span in spans:
        assert span.parent_span_id in ids or span.parent_span_id == root_span, (span.service, span.name)
    # server spans of each service hang under a client span of the caller
    by_id = {s.span_id: s for s in spans}
    for service in expected - {"gateway"}:
        servers = [s for s in spans if s.service == service and s.kind == SERVER]
        assert servers, f"no gRPC server span from {service}"
        assert any(by_id[s.parent_span_id].service != service for s in servers if s.parent_span_id in by_id)
    assert any(s.attributes.get("db.system") for s in spans), "no database spans in the trace"
