"""Analytics through the gateway against the real suite: every figure checked against a direct computation
from the events sent (and, for plays, the audit records appended)."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from gateway_harness import Harness
from retain.audit.v1 import audit_pb2
from retain.common.v1 import common_pb2
from retain_kit.protoconv import to_struct, to_timestamp

WS = "ws_analytics"
NOW = datetime.now(UTC).replace(microsecond=0)


def _order(uid: str, n: int, at: datetime, revenue: float, *, category: str, channel: str, discount: float = 0.0
           ) -> dict[str, Any]:
    props: dict[str, Any] = {"order_id": f"{uid}-{n}", "revenue": revenue, "category": category, "channel": channel}
    if discount:
        props["discount"] = discount
    return {"type": "track", "userId": uid, "event": "Order Completed", "messageId": f"{uid}-o{n}",
            "timestamp": at.isoformat(), "properties": props}


def dataset() -> tuple[list[dict[str, Any]], list[tuple[str, datetime, float, float, str, str]]]:
    """Loyal (monthly orders), a lapsed buyer, a churned buyer, a discount-only buyer, an unhappy one with a ticket."""
    events: list[dict[str, Any]] = []
    orders: list[tuple[str, datetime, float, float, str, str]] = []

    def add(uid: str, at: datetime, revenue: float, *, category: str = "skincare", channel: str = "web",
            discount: float = 0.0) -> None:
        n = sum(1 for o in orders if o[0] == uid)
        events.append(_order(uid, n, at, revenue, category=category, channel=channel, discount=discount))
        orders.append((uid, at, revenue, discount, category, channel))

    for k in range(6):
        add("loyal", NOW - timedelta(days=170 - 30 * k), 1000.0 + 10 * k, category="haircare", channel="app")
    add("lapsed", NOW - timedelta(days=250), 800.0)
    add("lapsed", NOW - timedelta(days=200), 700.0)
    add("churned", NOW - timedelta(days=500), 3000.0, channel="store")
    add("deal", NOW - timedelta(days=40), 400.0, discount=100.0)
    add("deal", NOW - timedelta(days=10), 300.0, discount=50.0)
    add("unhappy", NOW - timedelta(days=20), 1500.0, category="supplements")
    for n in range(2):
        events.append({"type": "track", "userId": "unhappy", "event": "Feedback Submitted",
                       "messageId": f"unhappy-fb{n}", "timestamp": (NOW - timedelta(days=5 - n)).isoformat(),
                       "properties": {"score": 1, "sentiment": "negative"}})
    events.append({"type": "track", "userId": "unhappy", "event": "Ticket Opened", "messageId": "unhappy-t",
                   "timestamp": (NOW - timedelta(days=2)).isoformat(), "properties": {"ticket_id": "t1"}})
    events.append({"type": "identify", "userId": "prospect", "messageId": "prospect-id",
                   "timestamp": (NOW - timedelta(days=3)).isoformat(), "traits": {"first_name": "Ploy"}})
    return events, orders


async def _load(gw: Harness) -> tuple[httpx.AsyncClient, list[tuple[str, datetime, float, float, str, str]]]:
    gw.need("profile", "scoring", "audit")
    ingest = await gw.key(WS, "ingest")
    operator = await gw.key(WS, "operator")
    events, orders = dataset()
    reply = await gw.client.post("/v1/batch", json={"batch": events}, headers={"Authorization": f"Bearer {ingest}"})
    assert reply.status_code == 200, reply.text
    gw.client.headers["Authorization"] = f"Bearer {operator}"
    return gw.client, orders


async def _ids(client: httpx.AsyncClient, *uids: str) -> dict[str, str]:
    out = {}
    for uid in uids:
        reply = await client.get(f"/v1/customers/{uid}")
        assert reply.status_code == 200, reply.text
        out[uid] = reply.json()["customer_id"]
    return out


async def test_value_leakage_matches_direct_computation(gw: Harness) -> None:
    client, orders = await _load(gw)
    reply = await client.get("/v1/analytics/value-leakage")
    assert reply.status_code == 200, reply.text
    body = reply.json()

    assert body["customers"] == 6
    assert body["orders"] == len(orders)
    assert math.isclose(body["revenue"], sum(o[2] for o in orders))
    assert math.isclose(body["discount"], 150.0)
    assert body["window"]["since"] and body["window"]["until"] and body["window"]["as_of"]
    assert body["models"], "value at risk must name the scoring models behind it"
    assert all(m["name"] and m["version"] for m in body["models"])

    by_dim = {b["dimension"]: {x["key"]: x for x in b["buckets"]} for b in body["breakdowns"]}
    expected_cat: dict[str, float] = defaultdict(float)
    expected_chan: dict[str, float] = defaultdict(float)
    for _, _, revenue, _, category, channel in orders:
        expected_cat[category] += revenue
        expected_chan[channel] += revenue
    assert {k: v["revenue"] for k, v in by_dim["category"].items()} == expected_cat
    assert {k: v["revenue"] for k, v in by_dim["channel"].items()} == expected_chan
    stages = by_dim["lifecycle_stage"]
    assert stages["churned"]["customers"] == 1 and stages["lapsed"]["customers"] == 1
    assert stages["new"]["customers"] == 2  # the prospect and the unhappy first-month buyer

    leaks = {x["kind"]: x for x in body["leakage"]}
    assert leaks["churned"]["customers"] == 1 and math.isclose(leaks["churned"]["value"], 3000.0)
    assert leaks["inactivity"]["customers"] == 1 and math.isclose(leaks["inactivity"]["value"], 1500.0)
    assert leaks["discount_dependence"]["customers"] == 1 and math.isclose(leaks["discount_dependence"]["value"], 700.0)
    assert leaks["discount_only"]["customers"] == 1 and math.isclose(leaks["discount_only"]["value"], 700.0)
    assert leaks["service_failures"]["customers"] == 1 and math.isclose(leaks["service_failures"]["value"], 1500.0)

    # Value at risk is scoring's per-customer figure summed over the customers not yet churned (loose
    # tolerance: features age a few seconds between the calls).
    ids = await _ids(client, "loyal", "lapsed", "deal", "unhappy")
    total = 0.0
    for cid in ids.values():
        scores = await client.get(f"/v1/analytics/customers/{cid}/scores")
        assert scores.status_code == 200, scores.text
        total += scores.json()["value_at_risk"]["value"]
    assert math.isclose(body["value_at_risk"], total, rel_tol=1e-5, abs_tol=1e-6)
    assert math.isclose(leaks["value_at_risk"]["value"], total, rel_tol=1e-5, abs_tol=1e-6)

    months = {m["month"]: m for m in body["monthly"]}
    assert sum(m["orders"] for m in months.values()) == len(orders)
    last_lapsed = max(o[1] for o in orders if o[0] == "lapsed")
    assert months[f"{last_lapsed:%Y-%m}"]["leavers"] >= 1


async def test_window_limits_revenue_and_is_reported(gw: Harness) -> None:
    client, orders = await _load(gw)
    since, until = NOW - timedelta(days=100), NOW - timedelta(days=15)
    reply = await client.get("/v1/analytics/value-leakage", params={"since": since.isoformat(),
                                                                     "until": until.isoformat()})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    inside = [o for o in orders if since <= o[1] < until]
    assert body["orders"] == len(inside)
    assert math.isclose(body["revenue"], sum(o[2] for o in inside))
    assert datetime.fromisoformat(body["window"]["since"]) == since
    assert datetime.fromisoformat(body["window"]["until"]) == until

    bad = await client.get("/v1/analytics/value-leakage", params={"since": until.isoformat(),
                                                                  "until": since.isoformat()})
    assert bad.status_code == 422 and bad.json()["field"] == "until"
    assert (await client.get("/v1/analytics/cohorts", params={"months": 0})).status_code == 422


async def test_cohorts_match_direct_computation(gw: Harness) -> None:
    client, orders = await _load(gw)
    reply = await client.get("/v1/analytics/cohorts", params={"months": 12})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["models"] and body["window"]["as_of"]
    first: dict[str, datetime] = {}
    for uid, at, *_ in sorted(orders, key=lambda o: o[1]):
        first.setdefault(uid, at)
    by_month: dict[str, list[str]] = defaultdict(list)
    for uid, at in first.items():
        by_month[f"{at:%Y-%m}"].append(uid)
    cohorts = {c["month"]: c for c in body["cohorts"]}
    assert set(cohorts) == set(by_month)
    for month, members in by_month.items():
        c = cohorts[month]
        assert c["customers"] == len(members)
        assert c["retention"][0] == 1.0
        ltv = sum(o[2] for o in orders if o[0] in members) / len(members)
        assert math.isclose(c["ltv_to_date"], ltv)
        repeaters = sum(1 for m in members if len({o[1].date() for o in orders if o[0] == m}) >= 2)
        assert math.isclose(c["repeat_rate"], repeaters / len(members))
        assert c["predicted_ltv"] >= c["ltv_to_date"]
    loyal = cohorts[f"{first['loyal']:%Y-%m}"]
    start = first["loyal"].year * 12 + first["loyal"].month
    loyal_months = {o[1].year * 12 + o[1].month - start for o in orders if o[0] == "loyal"}
    members = by_month[f"{first['loyal']:%Y-%m}"]
    for k, share in enumerate(loyal["retention"]):
        buyers = {o[0] for o in orders if o[0] in members and o[1].year * 12 + o[1].month - start == k}
        assert math.isclose(share, len(buyers) / len(members)), (k, loyal_months)


async def test_priority_segments_rank_by_value_at_risk(gw: Harness) -> None:
    client, orders = await _load(gw)
    reply = await client.get("/v1/analytics/priority-segments")
    assert reply.status_code == 200, reply.text
    segments = reply.json()["segments"]
    risks = [s["value_at_risk"] for s in segments]
    assert risks == sorted(risks, reverse=True)
    repeat = next(s for s in segments if s["segment"] == "repeat_buyer")
    # loyal, lapsed and deal ordered on two or more days.
    assert repeat["customers"] == 3
    assert math.isclose(repeat["value"], sum(o[2] for o in orders if o[0] in ("loyal", "lapsed", "deal")))
    assert repeat["leavers"] == 1 and repeat["stayers"] >= 1
    freq = next(c for c in repeat["comparison"] if c["feature"] == "frequency")
    assert math.isclose(freq["leavers_mean"], 2.0)


async def test_plays_measure_conversion_and_lift_over_holdout(gw: Harness) -> None:
    client, _ = await _load(gw)
    ingest = await gw.key(WS, "ingest")
    sent_at = NOW - timedelta(days=6)
    treated = [f"t{i}" for i in range(10)]
    held = [f"h{i}" for i in range(10)]
    events = []
    for uid in treated + held:
        events.append({"type": "identify", "userId": uid, "messageId": f"{uid}-id",
                       "timestamp": (sent_at - timedelta(days=30)).isoformat(), "traits": {}})
    # 6 of 10 treated and 2 of 10 held-out customers order within 7 days; t9 orders too late to count.
    converters = treated[:6] + held[:2]
    for uid in converters:
        events.append(_order(uid, 0, sent_at + timedelta(days=2), 500.0, category="skincare", channel="web"))
    events.append(_order("t9", 0, sent_at - timedelta(days=1), 999.0, category="skincare", channel="web"))
    reply = await client.post("/v1/batch", json={"batch": events}, headers={"Authorization": f"Bearer {ingest}"})
    assert reply.status_code == 200, reply.text
    ids = await _ids(client, *treated, *held)

    records = [audit_pb2.RecordInput(
        kind=audit_pb2.RECORD_KIND_CONFIG, offer_id="save10", outcome="updated", actor="test",
        payload=to_struct({"offer": {"offer_id": "save10", "cost": 40.0}}), occurred_at=to_timestamp(sent_at),
    )]
    for n, uid in enumerate(treated):
        cid = ids[uid]
        records.append(audit_pb2.RecordInput(
            kind=audit_pb2.RECORD_KIND_DECISION, customer_id=cid, decision_id=f"dec_{n:04x}", outcome="decided",
            offer_id="save10", occurred_at=to_timestamp(sent_at),
            payload=to_struct({"models": [{"model": "churn", "version": "v7"}],
                               "actions": [{"offer_id": "save10", "channel": "email"}]}),
        ))
        records.append(audit_pb2.RecordInput(
            kind=audit_pb2.RECORD_KIND_MESSAGE, customer_id=cid, decision_id=f"dec_{n:04x}", message_id=f"msg_{n:04x}",
            channel=common_pb2.CHANNEL_EMAIL, offer_id="save10", outcome="sent", occurred_at=to_timestamp(sent_at),
        ))
    for n, uid in enumerate(held):
        records.append(audit_pb2.RecordInput(
            kind=audit_pb2.RECORD_KIND_MESSAGE, customer_id=ids[uid], decision_id=f"dec_h{n:03x}",
            channel=common_pb2.CHANNEL_EMAIL, offer_id="save10", outcome="suppressed",
            occurred_at=to_timestamp(sent_at), payload=to_struct({"rule": "holdout", "detail": "in the control"}),
        ))
    await gw.audit.AppendBatch(audit_pb2.AppendBatchRequest(workspace_id=WS, records=records))

    reply = await client.get("/v1/analytics/plays", params={"conversion_days": 7})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert {"name": "churn", "version": "v7"} in body["models"]
    play = next(p for p in body["plays"] if p["offer_id"] == "save10")
    assert (play["decisions"], play["sends"], play["treated_customers"]) == (10, 10, 10)
    assert (play["conversions"], play["holdout_customers"], play["holdout_conversions"]) == (6, 10, 2)
    assert play["has_holdout"] and math.isclose(play["lift"], 0.4)
    se = math.sqrt(0.6 * 0.4 / 10 + 0.2 * 0.8 / 10)
    assert math.isclose(play["lift_ci_low"], 0.4 - 1.959963984540054 * se)
    assert math.isclose(play["lift_ci_high"], 0.4 + 1.959963984540054 * se)
    assert math.isclose(play["incentive_cost"], 6 * 40.0)
    # Incremental revenue: 6 x 500 treated minus the holdout's 100 per customer x 10, less incentives.
    assert math.isclose(play["value_saved"], 3000.0 - 1000.0 - 240.0)
    email = next(c for c in body["channels"] if c["channel"] == "email")
    assert (email["messages"], email["customers"], email["suppressed"]) == (10, 10, 10)

    short = (await client.get("/v1/analytics/plays", params={"conversion_days": 1})).json()
    assert next(p for p in short["plays"] if p["offer_id"] == "save10")["conversions"] == 0


async def test_analytics_needs_operator_role(gw: Harness) -> None:
    gw.need("profile")
    auditor = await gw.key(WS, "auditor")
    for path in ("/v1/analytics/value-leakage", "/v1/analytics/cohorts", "/v1/analytics/priority-segments",
                 "/v1/analytics/plays"):
        reply = await gw.client.get(path, headers={"Authorization": f"Bearer {auditor}"})
        assert reply.status_code == 403, path
        assert (await gw.client.get(path)).status_code == 401
