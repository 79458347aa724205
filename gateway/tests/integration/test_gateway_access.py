"""Every route of the app, walked from app.routes: workspace isolation, the role matrix, a read-only auditor.

New routes are covered automatically; a route that takes an API key must name its action through
`require(Action.X)`, which is how these tests find out who may call it.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from fastapi.routing import APIRoute
from gateway_harness import Harness
from retain.audit.v1 import audit_pb2
from retain_gateway.roles import Action, Role, is_allowed
from retain_kit.protoconv import to_struct

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def action_of(route: APIRoute) -> Action | None:
    """The Action passed to `require(...)` anywhere in the route's dependency tree."""
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        call = dep.call
        if call is not None and getattr(call, "__closure__", None):
            found = inspect.getclosurevars(call).nonlocals.get("action")
            if isinstance(found, Action):
                return found
        stack.extend(dep.dependencies)
    return None


def _flatten(routes: Any, prefix: str = "") -> list[tuple[str, APIRoute]]:
    out: list[tuple[str, APIRoute]] = []
    for route in routes:
        if isinstance(route, APIRoute):
            out.append((prefix + route.path, route))
        elif hasattr(route, "original_router"):  # FastAPI >= 0.165 keeps included routers as branches
            inner = prefix + str(getattr(route.include_context, "prefix", "") or "")
            out += _flatten(route.original_router.routes, inner)
    return out


def api_routes(app: Any) -> list[tuple[str, str, APIRoute]]:
    out = [
        (method, path, route) for path, route in _flatten(app.routes) for method in sorted(route.methods - {"HEAD"})
    ]
    assert len(out) >= 10, "the app's routes were not found"
    return out


def fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"{(\w+)(:\w+)?}", lambda m: values.get(m.group(1), values["customer_id"]), path)


async def test_a_key_never_reaches_another_workspaces_data_through_any_route(gw: Harness) -> None:
    gw.need("profile", "audit")
    a_ingest, a_admin = await gw.key("ws_a", "ingest"), await gw.key("ws_a", "admin")
    b_admin = await gw.key("ws_b", "admin")
    secrets = {"email": "alice.secret@a.example", "name": "Alice Secretname"}
    identified = await gw.client.post(
        "/v1/identify", headers=bearer(a_ingest), json={"userId": "alice-A", "traits": secrets}
    )
    assert identified.status_code == 200, identified.text
    a_customer = identified.json()["customer_id"]
    appended = await gw.audit.Append(
        audit_pb2.AppendRequest(
            workspace_id="ws_a",
            record=audit_pb2.RecordInput(
                kind=audit_pb2.RECORD_KIND_DECISION, customer_id=a_customer, decision_id="dec_a0000001",
                outcome="decided", payload=to_struct({"recipient": secrets["email"], "winner": "offer_a"}),
            ),
        )
    )
    checkpoint = (await gw.client.post("/v1/audit/checkpoints", headers=bearer(a_admin))).json()["checkpoint"]
    # Strings only workspace A's data contains; workspace B never sends them, so they must never come back.
    leaks = [*secrets.values(), appended.record.record_id, appended.record.hash, checkpoint["signature"]]

    async def a_state() -> tuple[Any, Any]:
        customer = (await gw.client.get(f"/v1/customers/{a_customer}", headers=bearer(a_admin))).json()
        records = (await gw.client.get("/v1/audit/records", headers=bearer(a_admin))).json()
        return ({k: customer.get(k) for k in ("customer_id", "traits", "consents")}, records)

    before = await a_state()
    ids = {"customer_id": a_customer, "decision_id": "dec_a0000001", "user_id": "alice-A", "name": "alice-A"}
    body = {
        "customer_id": a_customer, "userId": "alice-A", "event": "Order Completed", "decision_id": "dec_a0000001",
        "channel": "sms", "offer_id": "offer_a", "purpose": "marketing", "idempotency_key": "iso-1",
        "consents": [{"channel": "sms", "purpose": "marketing", "status": "withdrawn"}], "outcome": "accepted",
    }
    calls = 0
    for method, path, route in api_routes(gw.app):
        url = fill(path, ids)
        params = {k: v for k, v in ids.items() if k in {p.name for p in route.dependant.query_params}}
        kwargs: dict[str, Any] = {"headers": bearer(b_admin), "params": params}
        if method in MUTATING:
            kwargs["json"] = body
        response = await gw.client.request(method, url, **kwargs)
        calls += 1
        assert response.status_code < 500, (method, path, response.status_code, response.text)
        for secret in leaks:
            assert secret not in response.text, (method, path, secret)
        if method == "GET" and response.status_code == 200 and path != "/v1/audit/public-key":
            assert a_customer not in response.text, (method, path)
    assert calls == len(api_routes(gw.app))

    # Targeted: reads of A's ids from B find nothing; and nothing B did changed A.
    assert (await gw.client.get(f"/v1/customers/{a_customer}", headers=bearer(b_admin))).status_code == 404
    b_records = await gw.client.get("/v1/audit/records", headers=bearer(b_admin), params={"customer_id": a_customer})
    assert b_records.status_code == 200 and b_records.json()["records"] == []
    assert await a_state() == before
    verified = (await gw.client.get("/v1/audit/verify", headers=bearer(a_admin))).json()
    assert verified["ok"] and verified["records_checked"] == before[1]["records"][-1]["seq"]


async def test_each_role_reaches_exactly_its_routes(gw: Harness) -> None:
    keys = {role: await gw.key("ws_r", role.value) for role in Role}
    checked = 0
    for method, path, route in api_routes(gw.app):
        action = action_of(route)
        if action is None:
            continue  # health and signature-verified webhooks authenticate without API keys
        url = fill(path, {"customer_id": "nobody"})
        for role, key in keys.items():
            kwargs: dict[str, Any] = {"headers": bearer(key)}
            if method in MUTATING:
                kwargs["json"] = {}
            response = await gw.client.request(method, url, **kwargs)
            checked += 1
            if is_allowed({role}, action):
                assert response.status_code not in (401, 403), (role, method, path, response.text)
            else:
                assert response.status_code == 403, (role, method, path, response.status_code)
                assert response.json()["error"] == "forbidden"
    assert checked >= len(Role) * 10


async def test_auditor_changes_nothing(gw: Harness) -> None:
    auditor = await gw.key("ws_r", "auditor")
    mutating = [(m, p, r) for m, p, r in api_routes(gw.app) if m in MUTATING]
    assert mutating
    for method, path, route in mutating:
        response = await gw.client.request(
            method, fill(path, {"customer_id": "cus_x"}), headers=bearer(auditor), json={}
        )
        if action_of(route) is None:
            assert not 200 <= response.status_code < 300, (method, path)
        else:
            assert response.status_code == 403, (method, path, response.status_code)
