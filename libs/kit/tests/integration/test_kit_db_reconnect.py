"""Pooled PostgreSQL connections: checked only after idling, replaced when dead, never a failed request after
PostgreSQL dropped an idle connection."""

from __future__ import annotations

import asyncio
import os

import pytest
from retain_kit.config import async_database_url
from retain_kit.db import create_engine
from sqlalchemy import text

pytestmark = pytest.mark.integration

URL = async_database_url(os.environ.get("RETAIN_DATABASE_URL", ""))


@pytest.fixture
def pg_url() -> str:
    if not URL.startswith("postgresql"):
        pytest.skip("needs PostgreSQL (RETAIN_DATABASE_URL)")
    return URL


async def _backend_pid(engine) -> int:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def _terminate(engine, pid: int) -> None:  # type: ignore[no-untyped-def]
    # From a connection outside the pool under test.
    other = create_engine(URL)
    try:
        async with other.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        await other.dispose()


def one_connection_engine(url: str, monkeypatch: pytest.MonkeyPatch, *, ping_idle_seconds: str):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("RETAIN_DATABASE_POOL_SIZE", "1")
    monkeypatch.setenv("RETAIN_DATABASE_MAX_OVERFLOW", "0")
    monkeypatch.setenv("RETAIN_DATABASE_PING_IDLE_SECONDS", ping_idle_seconds)
    return create_engine(url)


async def test_an_idle_connection_killed_by_the_server_is_replaced_before_use(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = one_connection_engine(pg_url, monkeypatch, ping_idle_seconds="0.05")
    try:
        first = await _backend_pid(engine)
        await _terminate(engine, first)
        await asyncio.sleep(0.1)  # idle past the threshold: the checkout pings, finds it dead, reconnects
        second = await _backend_pid(engine)
        assert second != first
    finally:
        await engine.dispose()


async def test_a_busy_connection_is_not_pinged_and_a_dead_one_in_use_recycles_the_pool(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = one_connection_engine(pg_url, monkeypatch, ping_idle_seconds="3600")
    statements: list[str] = []
    from sqlalchemy import event

    event.listen(engine.sync_engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_a: statements.append(statement))
    try:
        first = await _backend_pid(engine)
        statements.clear()
        again = await _backend_pid(engine)
        assert again == first
        assert statements == ["SELECT pg_backend_pid()"]  # nothing in front of the one statement
        await _terminate(engine, first)
        # Not idle long enough to be checked: the request that meets the dead connection fails ...
        with pytest.raises(Exception):  # noqa: B017 - the driver's disconnect error, wrapped by SQLAlchemy
            await _backend_pid(engine)
        # ... and the pool has been recycled, so the next one gets a new connection.
        assert await _backend_pid(engine) != first
    finally:
        await engine.dispose()
