import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from gateway_harness import Harness, HarnessFactory
from retain.audit.v1 import audit_pb2
from retain.common.v1 import common_pb2
from retain_gateway import keys
from retain_gateway.models import ApiKeyRow
from retain_kit.errors import InvalidArgument, NotFound
from retain_kit.protoconv import to_struct


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def append(gw: Harness, workspace_id: str, customer_id: str, outcome: str = "sent") -> None:
    record = audit_pb2.RecordInput(
        kind=audit_pb2.RECORD_KIND_MESSAGE,
        customer_id=customer_id,
        channel=common_pb2.CHANNEL_SMS,
        outcome=outcome,
        payload=to_struct({"note": "ทดสอบ"}),
    )
    await gw.audit.Append(audit_pb2.AppendRequest(workspace_id=workspace_id, record=record))


# --- authentication and authorisation -------------------------------------------------------------

async def test_requests_without_a_valid_key_are_401(gw: Harness) -> None:
    for method, path in (("GET", "/v1/customers/u1"), ("POST", "/v1/track"), ("GET", "/v1/audit/verify")):
        response = await gw.client.request(method, path, json={})
        assert response.status_code == 401, path
        assert response.json()["error"] == "unauthorized"
        assert "Basic" in response.headers["www-authenticate"]
    forged = "rk_0a1b2c3d_" + "a" * 32
    response = await gw.client.get("/v1/audit/verify", headers=bearer(forged))
    assert response.status_code == 401 and "invalid" in response.json()["detail"]


async def test_key_is_accepted_as_bearer_basic_user_and_header(gw: Harness) -> None:
    key = await gw.key("ws_a", "auditor")
    await append(gw, "ws_a", "cus_1")
    for kwargs in ({"headers": bearer(key)}, {"auth": (key, "")}, {"headers": {"X-API-Key": key}}):
        response = await gw.client.get("/v1/audit/verify", **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 200, kwargs
        assert response.json()["ok"] is True and response.json()["records_checked"] == 1


async def test_wrong_role_is_403_and_admin_may_do_everything(gw: Harness) -> None:
    ingest = await gw.key("ws_a", "ingest")
    auditor = await gw.key("ws_a", "auditor")
    admin = await gw.key("ws_a", "admin")
    response = await gw.client.get("/v1/audit/records", headers=bearer(ingest))
    assert response.status_code == 403 and response.json()["error"] == "forbidden"
    response = await gw.client.post(
        "/v1/track", headers=bearer(auditor), json={"userId": "u1", "event": "Order Completed"}
    )
    assert response.status_code == 403
    response = await gw.client.post(
        "/v1/messages",
        headers=bearer(auditor),
        json={"customer_id": "u1", "channel": "sms", "offer_id": "o", "purpose": "marketing",
              "idempotency_key": "k1"},
    )
    assert response.status_code == 403
    response = await gw.client.get("/v1/audit/records", headers=bearer(admin))
    assert response.status_code == 200


async def test_revoked_key_stops_working_within_the_cache_ttl(make_harness: HarnessFactory) -> None:
    gw: Harness = await make_harness(auth_cache_ttl_seconds=0.3)
    key = await gw.key("ws_a", "auditor")
    assert (await gw.client.get("/v1/audit/verify", headers=bearer(key))).status_code == 200
    (info,) = await keys.list_keys(gw.sessions, workspace_id="ws_a")
    assert info.last_used_at is not None and key not in repr(info)
    # Revoked elsewhere (the CLI): this replica's cache may still honour it, but only briefly.
    assert await keys.revoke_key(gw.sessions, key_id=info.id) is True
    assert await keys.revoke_key(gw.sessions, key_id=info.id) is False
    await asyncio.sleep(0.35)
    assert (await gw.client.get("/v1/audit/verify", headers=bearer(key))).status_code == 401


async def test_expired_key_is_rejected(gw: Harness) -> None:
    key = await gw.key("ws_a", "auditor")
    async with gw.sessions() as session:
        row = (await session.execute(ApiKeyRow.__table__.select())).first()
        assert row is not None
        await session.execute(
            ApiKeyRow.__table__.update().values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        await session.commit()
    assert (await gw.client.get("/v1/audit/verify", headers=bearer(key))).status_code == 401


async def test_key_management_rules(gw: Harness) -> None:
    first = await keys.create_workspace(gw.sessions, workspace_id="ws_demo", name="Demo")
    again = await keys.create_workspace(gw.sessions, workspace_id="ws_demo", name="Other")
    assert again == first and again.name == "Demo"
    with pytest.raises(InvalidArgument) as err:
        await keys.create_workspace(gw.sessions, workspace_id="Demo Brand", name="x")
    assert err.value.field == "workspace_id"
    with pytest.raises(NotFound):
        await keys.issue_key(gw.sessions, workspace_id="ws_missing", roles=["ingest"], name="k")
    with pytest.raises(InvalidArgument) as err:
        await keys.issue_key(gw.sessions, workspace_id="ws_demo", roles=["root"], name="k")
    assert err.value.field == "roles"
    key = await keys.issue_key(gw.sessions, workspace_id="ws_demo", roles=["app", "ingest"], name="k")
    principal = await keys.authenticate(gw.sessions, key)
    assert principal is not None
    assert principal.workspace_id == "ws_demo" and principal.roles == {"app", "ingest"}
    with pytest.raises(NotFound):
        await keys.revoke_key(gw.sessions, key_id=principal.key_id, workspace_id="ws_other")
    async with gw.sessions() as session:
        stored = (await session.execute(ApiKeyRow.__table__.select())).one()
    assert key not in stored and stored.key_hash != key and key.startswith(f"rk_{stored.prefix}_")
    # Whoever holds only the plain text (it is never shown again) can still revoke it.
    assert await keys.revoke_key(gw.sessions, key_id=key) is True
    assert await keys.authenticate(gw.sessions, key) is None


# --- isolation ------------------------------------------------------------------------------------

async def test_audit_records_never_cross_workspaces(gw: Harness) -> None:
    key_a = await gw.key("ws_a", "auditor")
    key_b = await gw.key("ws_b", "auditor")
    await append(gw, "ws_b", "cus_b1")
    await append(gw, "ws_b", "cus_b1", outcome="delivered")
    await append(gw, "ws_a", "cus_a1")
    seen_a = (await gw.client.get("/v1/audit/records", headers=bearer(key_a))).json()["records"]
    assert [r["customer_id"] for r in seen_a] == ["cus_a1"]
    response = await gw.client.get("/v1/audit/records?customer_id=cus_b1", headers=bearer(key_a))
    assert response.status_code == 200 and response.json()["records"] == []
    # A workspace id smuggled into the query is ignored: the workspace is always the key's.
    response = await gw.client.get(
        "/v1/audit/records?customer_id=cus_b1&workspace_id=ws_b", headers=bearer(key_a)
    )
    assert response.json()["records"] == []
    seen_b = (await gw.client.get("/v1/audit/records?customer_id=cus_b1", headers=bearer(key_b))).json()
    assert [r["outcome"] for r in seen_b["records"]] == ["sent", "delivered"]
    assert seen_b["records"][0]["channel"] == "sms" and seen_b["records"][0]["kind"] == "message"
    assert seen_b["records"][0]["payload"] == {"note": "ทดสอบ"}
    verify_a = (await gw.client.get("/v1/audit/verify", headers=bearer(key_a))).json()
    verify_b = (await gw.client.get("/v1/audit/verify", headers=bearer(key_b))).json()
    assert (verify_a["records_checked"], verify_b["records_checked"]) == (1, 2)


async def test_audit_paging_and_filters(gw: Harness) -> None:
    key = await gw.key("ws_a", "operator")
    for i in range(5):
        await append(gw, "ws_a", "cus_1", outcome="sent" if i % 2 else "delivered")
    page = (await gw.client.get("/v1/audit/records?limit=2&outcome=delivered", headers=bearer(key))).json()
    assert len(page["records"]) == 2 and page["next_cursor"]
    rest = await gw.client.get(
        f"/v1/audit/records?limit=2&outcome=delivered&cursor={page['next_cursor']}", headers=bearer(key)
    )
    assert [r["outcome"] for r in rest.json()["records"]] == ["delivered"]
    response = await gw.client.get("/v1/audit/records?kind=decision", headers=bearer(key))
    assert response.json()["records"] == []
    response = await gw.client.get("/v1/audit/records?channel=fax", headers=bearer(key))
    assert response.status_code == 422 and response.json()["field"] == "channel"


async def test_customer_reads_never_cross_workspaces(gw: Harness) -> None:
    gw.need("profile")
    ingest_b = await gw.key("ws_b", "ingest")
    reader_a = await gw.key("ws_a", "contact_centre")
    reader_b = await gw.key("ws_b", "contact_centre")
    response = await gw.client.post(
        "/v1/identify", headers=bearer(ingest_b), json={"userId": "shared-user", "traits": {"name": "B"}}
    )
    assert response.status_code == 200, response.text
    customer_id = response.json()["customer_id"]
    assert customer_id.startswith("cus_")
    assert (await gw.client.get("/v1/customers/shared-user", headers=bearer(reader_a))).status_code == 404
    assert (await gw.client.get(f"/v1/customers/{customer_id}", headers=bearer(reader_a))).status_code == 404
    response = await gw.client.get("/v1/customers/shared-user", headers=bearer(reader_b))
    assert response.status_code == 200
    assert response.json()["customer_id"] == customer_id and response.json()["traits"]["name"] == "B"


# --- ingestion ------------------------------------------------------------------------------------

async def test_batch_with_one_bad_item_stores_the_others(gw: Harness) -> None:
    gw.need("profile")
    ingest = await gw.key("ws_a", "ingest")
    reader = await gw.key("ws_a", "contact_centre")
    batch = {
        "batch": [
            {"type": "track", "userId": "u1", "event": "Order Completed", "properties": {"revenue": 990}},
            {"type": "track", "userId": "u1", "properties": {"revenue": 1}},
            {"type": "page", "userId": "u1", "name": "Home", "messageId": "m-page-1"},
        ],
        "writeKey": ingest,
        "context": {"library": {"name": "analytics-python"}},
    }
    response = await gw.client.post("/v1/batch", auth=(ingest, ""), json=batch)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 1)
    bad = body["results"][1]
    assert bad["status"] == "rejected" and bad["field"] == "batch[1].event"
    assert [r["index"] for r in body["results"]] == [0, 1, 2]
    assert body["results"][2]["message_id"] == "m-page-1"
    events = await gw.client.get("/v1/customers/u1/events", headers=bearer(reader))
    assert events.status_code == 200
    assert sorted(e["event"] for e in events.json()["events"]) == ["Home", "Order Completed"]
    again = await gw.client.post("/v1/batch", auth=(ingest, ""), json={"batch": [batch["batch"][2]]})
    assert again.json()["results"][0]["status"] == "duplicate"


async def test_single_track_is_accepted_then_duplicate(gw: Harness) -> None:
    gw.need("profile")
    ingest = await gw.key("ws_a", "ingest")
    event = {"userId": "u2", "event": "App Opened", "messageId": f"m-{uuid.uuid4().hex}"}
    first = await gw.client.post("/v1/track", headers=bearer(ingest), json=event)
    assert first.status_code == 200, first.text
    assert first.json()["success"] is True and first.json()["status"] == "accepted"
    second = await gw.client.post("/v1/track", headers=bearer(ingest), json=event)
    assert second.status_code == 200 and second.json()["status"] == "duplicate"
    assert second.json()["messageId"] == event["messageId"]


async def test_batch_with_nothing_valid_is_400_with_results(gw: Harness) -> None:
    ingest = await gw.key("ws_a", "ingest")
    response = await gw.client.post(
        "/v1/batch", headers=bearer(ingest), json={"batch": [{"type": "track", "event": "x"}, {"type": "nope"}]}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_argument" and body["field"] == "batch[0].userId"
    assert [r["field"] for r in body["results"]] == ["batch[0].userId", "batch[1].type"]


async def test_oversized_batches_are_413(gw: Harness) -> None:
    ingest = await gw.key("ws_a", "ingest")
    item = {"type": "track", "userId": "u1", "event": "e"}
    response = await gw.client.post("/v1/batch", headers=bearer(ingest), json={"batch": [item] * 501})
    assert response.status_code == 413 and response.json()["error"] == "payload_too_large"
    big = {**item, "properties": {"blob": "x" * 510_000}}
    response = await gw.client.post("/v1/batch", headers=bearer(ingest), json={"batch": [big]})
    assert response.status_code == 413


async def test_validation_errors_are_422_naming_the_field(gw: Harness) -> None:
    ingest = await gw.key("ws_a", "ingest")
    operator = await gw.key("ws_a", "operator")
    response = await gw.client.put(
        "/v1/customers/u1/consents",
        headers=bearer(operator),
        json={"consents": [{"channel": "fax", "purpose": "marketing", "status": "granted"}]},
    )
    assert response.status_code == 422
    assert response.json()["field"] == "consents[0].channel" and response.json()["error"] == "invalid_argument"
    response = await gw.client.put(
        "/v1/customers/u1/consents",
        headers=bearer(operator),
        json={"consents": [{"channel": "sms", "purpose": "marketing", "status": "maybe"}]},
    )
    assert response.status_code == 422 and response.json()["field"] == "consents[0].status"
    response = await gw.client.post("/v1/track", headers=bearer(ingest), json={"userId": "u1"})
    assert response.status_code == 422 and response.json()["field"] == "event"
    response = await gw.client.post("/v1/track", headers=bearer(ingest), json={"event": "x"})
    assert response.status_code == 422 and response.json()["field"] == "userId"
    response = await gw.client.post(
        "/v1/track", headers=bearer(ingest), json={"userId": "u1", "event": "x", "timestamp": "soon"}
    )
    assert response.status_code == 422 and response.json()["field"] == "timestamp"
    response = await gw.client.post("/v1/track", headers=bearer(ingest), content=b"{not json")
    assert response.status_code == 422 and set(response.json()) >= {"error", "detail"}


async def test_consents_are_set_and_audited_with_the_key_as_actor(gw: Harness) -> None:
    gw.need("profile")
    ingest = await gw.key("ws_a", "ingest")
    operator = await gw.key("ws_a", "operator")
    await gw.client.post("/v1/identify", headers=bearer(ingest), json={"userId": "u3"})
    response = await gw.client.put(
        "/v1/customers/u3/consents",
        headers=bearer(operator),
        json={"consents": [{"channel": "sms", "purpose": "marketing", "status": "granted",
                            "source": "app", "lawful_basis": "consent", "policy_version": "v1"}]},
    )
    assert response.status_code == 200, response.text
    customer_id = response.json()["customer_id"]
    assert [(c["channel"], c["status"]) for c in response.json()["consents"]] == [("sms", "granted")]
    # The auditor asks by the user id; the gateway resolves it to the internal id audit stores.
    records = (await gw.client.get("/v1/audit/records?customer_id=u3", headers=bearer(operator))).json()
    assert [(r["customer_id"], r["kind"], r["outcome"]) for r in records["records"]] == [
        (customer_id, "consent", "granted")
    ]
    (info,) = [k for k in await keys.list_keys(gw.sessions, workspace_id="ws_a") if "operator" in k.roles]
    assert records["records"][0]["actor"] == info.id
    profile = (await gw.client.get("/v1/customers/u3", headers=bearer(operator))).json()
    assert profile["consents"][0]["channel"] == "sms"
    assert isinstance(profile["events_count"], int)


# --- decisions ------------------------------------------------------------------------------------

async def test_offers_round_trip_through_decision(gw: Harness) -> None:
    gw.need("decision")
    operator = await gw.key("ws_a", "operator")
    offer = {
        "offer_id": "save10", "name": "10% save offer", "play_type": "save", "channels": ["sms", "line"],
        "purpose": "marketing", "value": 300, "cost": 30,
        "templates": [
            {"channel": "sms", "locale": "th", "body": "สวัสดี {{ name }}"},
            {"channel": "line", "locale": "th", "body": "สวัสดี {{ name }}"},
        ],
    }
    response = await gw.client.post("/v1/offers", headers=bearer(operator), json=offer)
    assert response.status_code == 200, response.text
    assert response.json()["play_type"] == "save" and response.json()["channels"] == ["sms", "line"]
    listed = (await gw.client.get("/v1/offers", headers=bearer(operator))).json()["offers"]
    assert [o["offer_id"] for o in listed] == ["save10"]
    response = await gw.client.post("/v1/offers", headers=bearer(operator), json={**offer, "play_type": "bribe"})
    assert response.status_code == 422 and response.json()["field"] == "play_type"


async def test_unreachable_downstream_is_503_with_retry_after(make_harness: HarnessFactory) -> None:
    gw: Harness = await make_harness(down=("decision",), retry_after_seconds=2)
    app_key = await gw.key("ws_a", "app")
    response = await gw.client.get(
        "/v1/customers/u1/next-best-actions?placement=home&limit=3&channel=in_app", headers=bearer(app_key)
    )
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert response.json()["error"] == "unavailable" and response.json()["detail"]


async def test_unreachable_audit_is_503_for_auditors(make_harness: HarnessFactory) -> None:
    gw: Harness = await make_harness(down=("audit",))
    key = await gw.key("ws_a", "auditor")
    response = await gw.client.get("/v1/audit/verify", headers=bearer(key))
    assert response.status_code == 503 and "retry-after" in response.headers


# --- health, docs, limits -------------------------------------------------------------------------

async def test_healthz_reports_each_downstream(make_harness: HarnessFactory) -> None:
    gw: Harness = await make_harness(down=("decision",))
    response = await gw.client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert set(body["services"]) == {"profile", "scoring", "channels", "decision", "audit", "gateway_db"}
    assert body["services"]["audit"] == "SERVING" and body["services"]["gateway_db"] == "SERVING"
    assert body["services"]["decision"] != "SERVING"
    # The probes' endpoint answers from the process alone, whatever is down.
    live = await gw.client.get("/livez")
    assert live.status_code == 200 and live.json() == {"status": "ok"}


async def test_healthz_is_ok_when_everything_serves(gw: Harness) -> None:
    gw.need("profile", "decision")
    response = await gw.client.get("/healthz")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ok"


async def test_docs_and_openapi_need_no_key(gw: Harness) -> None:
    spec = (await gw.client.get("/openapi.json")).json()
    assert {"/v1/batch", "/v1/customers/{customer_id}/next-best-actions", "/v1/audit/records"} <= set(
        spec["paths"]
    )
    assert set(spec["components"]["securitySchemes"]) == {"bearer", "basic", "apiKey"}
    assert (await gw.client.get("/docs")).status_code == 200


async def test_rate_limit_per_key_with_redis(make_harness: HarnessFactory, redis_url: str) -> None:
    gw: Harness = await make_harness(redis_url=redis_url, rate_limit=3, rate_window_seconds=60)
    limited = await gw.key("ws_a", "auditor")
    other = await gw.key("ws_a", "auditor")
    statuses = [(await gw.client.get("/v1/audit/verify", headers=bearer(limited))).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    response = await gw.client.get("/v1/audit/verify", headers=bearer(limited))
    assert response.json()["error"] == "rate_limited"
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert (await gw.client.get("/v1/audit/verify", headers=bearer(other))).status_code == 200


async def test_suppressed_send_is_an_answer_not_an_error(gw: Harness) -> None:
    gw.need("profile", "decision")
    ingest = await gw.key("ws_a", "ingest")
    operator = await gw.key("ws_a", "operator")
    await gw.client.post("/v1/identify", headers=bearer(ingest), json={"userId": "u9", "traits": {"plan": "gold"}})
    offer = {"offer_id": "save10", "name": "save", "play_type": "save", "channels": ["sms"],
             "templates": [{"channel": "sms", "locale": "th", "body": "hi"}]}
    assert (await gw.client.post("/v1/offers", headers=bearer(operator), json=offer)).status_code == 200
    # No consent was ever granted for SMS marketing (PDPA opt-in), so governance drops the send.
    response = await gw.client.post(
        "/v1/messages",
        headers=bearer(operator),
        json={"customer_id": "u9", "channel": "sms", "offer_id": "save10", "purpose": "marketing",
              "idempotency_key": "send-1"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "suppressed" and body["rule"] == "no_consent"
    assert body["decision_id"].startswith("dec_") and body["message_id"] == ""
    decision = await gw.client.post(
        "/v1/decisions", headers=bearer(operator), json={"customer_id": "u9", "channels": ["sms"]}
    )
    assert decision.status_code == 200, decision.text
    assert decision.json()["actions"] == []
    assert {(s["offer_id"], s["channel"]) for s in decision.json()["suppressed"]} == {("save10", "sms")}
    assert decision.json()["customer"]["customer_id"].startswith("cus_")
    assert decision.json()["customer"]["lifecycle_stage"] == "new"
