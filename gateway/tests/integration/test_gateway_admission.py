"""Admission control on the real gateway app and services: a full pool refuses at once with 503."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from gateway_harness import Harness, HarnessFactory


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class SlowUpload:
    """A request body that arrives only when the test says so: its request holds its slot until then.

    The gateway reads a body only after admission, so once the body is asked for the slot is held.
    """

    def __init__(self, payload: dict[str, object]) -> None:
        self.payload = json.dumps(payload).encode()
        self.asked = asyncio.Event()
        self.go = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.asked.set()
        await self.go.wait()
        yield self.payload


async def test_a_full_pool_sheds_with_503_while_health_and_the_other_pool_answer(
    make_harness: HarnessFactory,
) -> None:
    gw: Harness = await make_harness(max_in_flight=1, ingest_max_in_flight=1, admission_wait_ms=0)
    gw.need("profile", "decision")
    ingest = await gw.key("ws_adm", "ingest")
    operator = await gw.key("ws_adm", "operator")
    identified = await gw.client.post(
        "/v1/identify", headers=bearer(ingest), json={"userId": "adm1", "traits": {"plan": "gold"}}
    )
    assert identified.status_code == 200, identified.text

    upload = SlowUpload({"customer_id": "adm1", "channels": ["sms"]})
    held = asyncio.create_task(
        gw.client.post(
            "/v1/decisions",
            headers={**bearer(operator), "Content-Type": "application/json"},
            content=upload,
        )
    )
    await upload.asked.wait()

    shed = await gw.client.get("/v1/customers/adm1", headers=bearer(operator))
    assert shed.status_code == 503, shed.text
    assert shed.headers["retry-after"] == "1"
    body = shed.json()
    assert body["error"] == "overloaded" and "default" in body["detail"]
    # Provider webhooks count against the pool too (providers retry).
    webhook = await gw.client.post("/webhooks/line", content=b"{}", headers={"X-Line-Signature": "x"})
    assert webhook.status_code == 503 and webhook.json()["error"] == "overloaded"
    health = await gw.client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    # Ingestion has a pool of its own, so it is still admitted and served.
    tracked = await gw.client.post(
        "/v1/track", headers=bearer(ingest), json={"userId": "adm1", "event": "Order Completed"}
    )
    assert tracked.status_code == 200, tracked.text

    upload.go.set()
    decision = await held
    assert decision.status_code == 200, decision.text
    assert decision.json()["customer"]["customer_id"].startswith("cus_")
    # The slot came back: the same read is served now.
    served = await gw.client.get("/v1/customers/adm1", headers=bearer(operator))
    assert served.status_code == 200, served.text
