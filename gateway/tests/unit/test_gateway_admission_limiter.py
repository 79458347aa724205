"""The admission limiter and its ASGI middleware, driven directly (no network, no downstream services)."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from retain_gateway.admission import (
    DEFAULT,
    INGEST,
    AdmissionMiddleware,
    Limiter,
    build_pools,
    pool_for,
)
from retain_gateway.app import INGEST_PATHS
from starlette.types import Receive, Scope, Send

# Long enough never to expire while a test runs: these tests release slots explicitly, they never wait it out.
FOREVER = 60.0


async def settle() -> None:
    """Lets every ready task run until it blocks again."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_n_slots_then_the_next_waits_and_gets_the_freed_slot() -> None:
    limiter = Limiter("t", limit=2, wait_seconds=FOREVER)
    assert await limiter.acquire() and await limiter.acquire()
    late = asyncio.create_task(limiter.acquire())
    await settle()
    assert not late.done() and limiter.waiting == 1
    limiter.release()
    assert await late is True
    assert limiter.in_flight == 2 and limiter.waiting == 0
    limiter.release()
    limiter.release()
    assert limiter.in_flight == 0


async def test_a_waiter_is_shed_when_no_slot_frees_within_the_wait() -> None:
    limiter = Limiter("t", limit=1, wait_seconds=0.01)
    assert await limiter.acquire()
    assert await limiter.acquire() is False
    assert limiter.shed_total == 1 and limiter.waiting == 0 and limiter.in_flight == 1
    limiter.release()
    assert await limiter.acquire() is True


async def test_no_wait_sheds_at_once_when_full() -> None:
    limiter = Limiter("t", limit=1, wait_seconds=0)
    assert await limiter.acquire()
    assert await limiter.acquire() is False
    assert limiter.shed_total == 1


async def test_waiters_are_admitted_first_come_first_served() -> None:
    limiter = Limiter("t", limit=1, wait_seconds=FOREVER)
    assert await limiter.acquire()
    order: list[str] = []

    async def wait(name: str) -> None:
        assert await limiter.acquire()
        order.append(name)

    tasks = []
    for name in ("a", "b", "c"):
        tasks.append(asyncio.create_task(wait(name)))
        await settle()
    assert limiter.waiting == 3
    for expected in (["a"], ["a", "b"], ["a", "b", "c"]):
        limiter.release()
        await settle()
        assert order == expected
    await asyncio.gather(*tasks)
    # A newcomer does not overtake a waiter: with the slot held by "c", it queues.
    newcomer = asyncio.create_task(limiter.acquire())
    await settle()
    assert not newcomer.done()
    limiter.release()
    assert await newcomer
    limiter.release()
    assert limiter.in_flight == 0


async def test_a_cancelled_waiter_leaks_no_slot() -> None:
    limiter = Limiter("t", limit=1, wait_seconds=FOREVER)
    assert await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await settle()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.waiting == 0
    limiter.release()
    assert limiter.in_flight == 0
    assert await limiter.acquire()


async def test_a_waiter_cancelled_just_as_it_is_handed_a_slot_passes_the_slot_on() -> None:
    limiter = Limiter("t", limit=1, wait_seconds=FOREVER)
    assert await limiter.acquire()
    first = asyncio.create_task(limiter.acquire())
    await settle()
    second = asyncio.create_task(limiter.acquire())
    await settle()
    limiter.release()  # hands the slot to `first`, which has not run since
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second is True
    assert limiter.in_flight == 1
    limiter.release()
    assert limiter.in_flight == 0


async def test_a_slot_is_returned_when_its_holder_raises() -> None:
    limiter = Limiter("t", limit=1, wait_seconds=0)
    with pytest.raises(RuntimeError, match="boom"):
        async with limiter.slot() as admitted:
            assert admitted
            raise RuntimeError("boom")
    assert limiter.in_flight == 0
    async with limiter.slot() as admitted:
        assert admitted


def test_release_without_a_held_slot_is_an_error() -> None:
    limiter = Limiter("t", limit=1, wait_seconds=0)
    with pytest.raises(RuntimeError, match="without a slot"):
        limiter.release()


async def test_shed_requests_are_logged_as_a_count_at_most_once_a_second(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    limiter = Limiter("t", limit=1, wait_seconds=0, clock=lambda: now[0])
    assert await limiter.acquire()
    with caplog.at_level(logging.WARNING, logger="retain_gateway.admission"):
        for at in (100.0, 100.2, 100.5, 100.9):
            now[0] = at
            assert not await limiter.acquire()
        assert len(caplog.records) == 1
        now[0] = 101.1
        assert not await limiter.acquire()
    assert len(caplog.records) == 2
    assert "shed 1 request(s)" in caplog.records[0].getMessage()
    # The second line counts the three shed silently in between and this one.
    assert "shed 4 request(s)" in caplog.records[1].getMessage()
    assert "5 in all" in caplog.records[1].getMessage()


def test_paths_map_to_pools() -> None:
    assert pool_for("/v1/batch", ingest_paths=INGEST_PATHS) == INGEST
    assert pool_for("/v1/track/", ingest_paths=INGEST_PATHS) == INGEST
    for path in ("/v1/decisions/next-best-action", "/v1/customers/u1", "/webhooks/twilio/status", "/webhooks/line"):
        assert pool_for(path, ingest_paths=INGEST_PATHS) == DEFAULT, path
    for path in ("/healthz", "/livez", "/docs", "/openapi.json", "/console", "/console/", "/console/static/app.js"):
        assert pool_for(path, ingest_paths=INGEST_PATHS) is None, path
    assert {"/v1/track", "/v1/identify", "/v1/alias", "/v1/page", "/v1/screen", "/v1/batch"} <= INGEST_PATHS


def test_a_zero_limit_leaves_its_pool_unlimited() -> None:
    assert set(build_pools(default_limit=64, ingest_limit=32, wait_seconds=0.1)) == {DEFAULT, INGEST}
    assert set(build_pools(default_limit=0, ingest_limit=32, wait_seconds=0.1)) == {INGEST}
    assert build_pools(default_limit=0, ingest_limit=0, wait_seconds=0.1) == {}


class HeldApp:
    """A tiny ASGI app: /hold blocks until released, /boom raises, anything else answers 200 at once."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/boom":
            raise RuntimeError("boom")
        if scope["path"] == "/hold":
            self.entered.set()
            await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})


def middleware_client(app: HeldApp, pools: dict[str, Limiter]) -> httpx.AsyncClient:
    wrapped = AdmissionMiddleware(app, pools=pools, ingest_paths={"/v1/track"}, retry_after_seconds=3)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=wrapped), base_url="http://gateway")


async def test_a_full_pool_answers_503_overloaded_with_retry_after() -> None:
    app = HeldApp()
    pools = {DEFAULT: Limiter(DEFAULT, limit=1, wait_seconds=0), INGEST: Limiter(INGEST, limit=1, wait_seconds=0)}
    async with middleware_client(app, pools) as client:
        held = asyncio.create_task(client.get("/hold"))
        await app.entered.wait()
        shed = await client.get("/v1/customers/u1")
        assert shed.status_code == 503
        assert shed.headers["retry-after"] == "3"
        body = shed.json()
        assert body["error"] == "overloaded" and "default" in body["detail"]
        # Exempt paths and the other pool are still served.
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/console/static/app.js")).status_code == 200
        assert (await client.post("/v1/track")).status_code == 200
        app.release.set()
        assert (await held).status_code == 200
        assert (await client.get("/v1/customers/u1")).status_code == 200
    assert pools[DEFAULT].in_flight == 0 and pools[DEFAULT].shed_total == 1


async def test_the_middleware_returns_the_slot_when_the_app_raises() -> None:
    app = HeldApp()
    pools = {DEFAULT: Limiter(DEFAULT, limit=1, wait_seconds=0)}
    async with middleware_client(app, pools) as client:
        with pytest.raises(RuntimeError, match="boom"):
            await client.get("/boom")
        assert pools[DEFAULT].in_flight == 0
        assert (await client.get("/v1/customers/u1")).status_code == 200
