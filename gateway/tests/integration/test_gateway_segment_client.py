"""The real Segment client (segment-analytics-python) against the gateway served by uvicorn."""

import asyncio
from collections.abc import AsyncIterator

import pytest
import uvicorn
from gateway_harness import Harness
from retain_kit.testing import free_port

analytics = pytest.importorskip("segment.analytics")


@pytest.fixture
async def served(gw: Harness) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(gw.app, host="127.0.0.1", port=port, lifespan="off", log_config=None, access_log=False)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


async def test_segment_client_write_key_over_basic_auth(gw: Harness, served: str) -> None:
    gw.need("profile")
    write_key = await gw.key("ws_a", "ingest")
    reader = await gw.key("ws_a", "contact_centre")
    errors: list[Exception] = []

    def send() -> None:
        client = analytics.Client(
            write_key, host=served, sync_mode=True, on_error=lambda exc, _batch: errors.append(exc)
        )
        client.identify("seg-user", {"email": "Seg.User@Example.com"})
        client.track("seg-user", "Order Completed", {"revenue": 1290.0, "currency": "THB"})
        client.track(anonymous_id="anon-1", event="App Opened")

    await asyncio.to_thread(send)
    assert errors == []
    response = await gw.client.get("/v1/customers/seg-user/events", headers={"Authorization": f"Bearer {reader}"})
    assert response.status_code == 200
    assert {e["event"] for e in response.json()["events"]} >= {"Order Completed"}
    profile = (await gw.client.get("/v1/customers/seg-user", headers={"X-API-Key": reader})).json()
    assert {"kind": "user_id", "value": "seg-user"} in profile["identifiers"]


async def test_segment_client_with_a_wrong_key_is_refused(gw: Harness, served: str) -> None:
    def send() -> None:
        client = analytics.Client("rk_0a1b2c3d_" + "x" * 32, host=served, sync_mode=True, max_retries=0)
        client.track("seg-user", "Order Completed")

    with pytest.raises(analytics.request.APIError) as err:
        await asyncio.to_thread(send)
    assert err.value.status == 401
