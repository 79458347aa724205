"""Auditor surface: filtered records with cursors, streaming export, verify, checkpoints, the public key."""

import csv
import io
import json
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from gateway_harness import Harness
from retain.audit.v1 import audit_pb2
from retain.common.v1 import common_pb2
from retain_kit.protoconv import to_struct, to_timestamp

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def seed(gw: Harness, workspace: str, n: int) -> None:
    records = [
        audit_pb2.RecordInput(
            kind=audit_pb2.RECORD_KIND_MESSAGE if i % 2 else audit_pb2.RECORD_KIND_DECISION,
            customer_id=f"cus_{i % 3:032x}",
            decision_id=f"dec_{i:08x}",
            channel=common_pb2.CHANNEL_SMS if i % 2 else common_pb2.CHANNEL_LINE,
            journey_id="winback" if i < n // 2 else "welcome",
            offer_id=f"offer_{i % 2}",
            outcome="sent" if i % 2 else "decided",
            payload=to_struct({"recipient": f"+66810000{i:03d}", "n": i}),
            occurred_at=to_timestamp(T0 + timedelta(hours=i)),
        )
        for i in range(n)
    ]
    await gw.audit.AppendBatch(audit_pb2.AppendBatchRequest(workspace_id=workspace, records=records))


async def test_records_filter_and_page_with_cursors(gw: Harness) -> None:
    key = await gw.key("ws_a", "auditor")
    await seed(gw, "ws_a", 12)
    seen: list[int] = []
    cursor = ""
    while True:
        page = await gw.client.get(
            "/v1/audit/records", headers=bearer(key), params={"kind": "message", "limit": 2, "cursor": cursor}
        )
        assert page.status_code == 200, page.text
        body = page.json()
        seen += [r["seq"] for r in body["records"]]
        assert all(r["kind"] == "message" and r["channel"] == "sms" for r in body["records"])
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert seen == [2, 4, 6, 8, 10, 12]
    cases = {
        "customer_id": (f"cus_{1:032x}", [2, 5, 8, 11]),
        "decision_id": ("dec_00000003", [4]),
        "journey_id": ("welcome", [7, 8, 9, 10, 11, 12]),
        "offer_id": ("offer_0", [1, 3, 5, 7, 9, 11]),
        "outcome": ("decided", [1, 3, 5, 7, 9, 11]),
        "channel": ("line", [1, 3, 5, 7, 9, 11]),
    }
    for name, (value, expected) in cases.items():
        response = await gw.client.get("/v1/audit/records", headers=bearer(key), params={name: value})
        assert [r["seq"] for r in response.json()["records"]] == expected, name
    window = {"since": (T0 + timedelta(hours=2)).isoformat(), "until": (T0 + timedelta(hours=5)).isoformat()}
    response = await gw.client.get("/v1/audit/records", headers=bearer(key), params=window)
    assert [r["seq"] for r in response.json()["records"]] == [3, 4, 5]
    assert response.json()["records"][0]["payload"]["recipient"] == "+66810000002"
    backwards = {"since": window["until"], "until": window["since"]}
    response = await gw.client.get("/v1/audit/records", headers=bearer(key), params=backwards)
    assert response.status_code == 422 and response.json()["field"] == "until"


async def test_export_streams_jsonl_and_csv_over_many_pages(gw: Harness) -> None:
    key = await gw.key("ws_a", "auditor")
    await seed(gw, "ws_a", 1203)  # more than two export pages
    response = await gw.client.get("/v1/audit/export", headers=bearer(key), params={"format": "jsonl"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [r["seq"] for r in lines] == list(range(1, 1204))
    assert lines[0]["payload"]["recipient"] == "+66810000000" and "workspace_id" not in lines[0]
    since = (T0 + timedelta(hours=10)).isoformat()
    until = (T0 + timedelta(hours=13)).isoformat()
    response = await gw.client.get(
        "/v1/audit/export", headers=bearer(key), params={"format": "csv", "since": since, "until": until}
    )
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [int(r["seq"]) for r in rows] == [11, 12, 13]
    assert json.loads(rows[0]["payload"])["n"] == 10 and rows[0]["hash"]


async def test_checkpoint_public_key_and_verify(gw: Harness) -> None:
    admin = await gw.key("ws_a", "admin")
    auditor = await gw.key("ws_a", "auditor")
    empty = await gw.client.post("/v1/audit/checkpoints", headers=bearer(admin))
    assert empty.status_code == 200 and empty.json() == {"checkpoint": None}
    await seed(gw, "ws_a", 5)
    created = (await gw.client.post("/v1/audit/checkpoints", headers=bearer(admin))).json()["checkpoint"]
    assert created["seq"] == 5
    assert (await gw.client.post("/v1/audit/checkpoints", headers=bearer(auditor))).status_code == 403
    listed = (await gw.client.get("/v1/audit/checkpoints", headers=bearer(auditor))).json()["checkpoints"]
    assert listed == [created]
    key = (await gw.client.get("/v1/audit/public-key", headers=bearer(auditor))).json()
    assert key["algorithm"] == "Ed25519" and key["key_id"] == created["key_id"]
    assert isinstance(serialization.load_pem_public_key(key["public_key_pem"].encode()), Ed25519PublicKey)
    verified = (await gw.client.get("/v1/audit/verify", headers=bearer(auditor))).json()
    assert verified["ok"] and verified["records_checked"] == 5 and verified["checkpoints_checked"] == 1
