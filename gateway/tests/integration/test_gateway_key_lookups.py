"""Key lookups against the gateway's real key store: requests in flight with the same uncached key share one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from retain_gateway import keys
from retain_gateway.domain import apikey
from retain_gateway.domain.authcache import AuthCache
from retain_kit.db import session_factory
from retain_kit.testing import DbTarget
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

GATEWAY_DIR = Path(__file__).resolve().parents[2]


class Statements:
    """Counts the statements the key store runs (SELECT, UPDATE, ...)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.seen.append(statement.lstrip().split(None, 1)[0].upper())

    def count(self, verb: str) -> int:
        return self.seen.count(verb)


@dataclass
class Store:
    sessions: async_sessionmaker[AsyncSession]
    statements: Statements

    async def new_key(self) -> str:
        """A key of ws_a; the statements that made it are not counted."""
        await keys.create_workspace(self.sessions, workspace_id="ws_a", name="A")
        key = await keys.issue_key(self.sessions, workspace_id="ws_a", roles=["app"], name="k")
        self.statements.seen.clear()
        return key


@pytest.fixture
async def store(db_target: DbTarget) -> AsyncIterator[Store]:
    engine = await db_target.migrate(GATEWAY_DIR)
    statements = Statements()
    event.listen(engine.sync_engine, "before_cursor_execute", statements)
    yield Store(session_factory(engine), statements)
    event.remove(engine.sync_engine, "before_cursor_execute", statements)


async def test_concurrent_requests_with_an_uncached_key_share_one_lookup(store: Store) -> None:
    sessions, statements = store.sessions, store.statements
    key = await store.new_key()
    cache = AuthCache(ttl=60, maxsize=10)
    leaving = asyncio.ensure_future(keys.authenticate(sessions, key, cache=cache))
    await asyncio.sleep(0)
    staying = [asyncio.ensure_future(keys.authenticate(sessions, key, cache=cache)) for _ in range(15)]
    await asyncio.sleep(0)
    # A request that goes away (client disconnect) does not take the lookup with it.
    leaving.cancel()
    principals = await asyncio.gather(*staying)
    assert leaving.cancelled()
    assert {p.workspace_id if p else None for p in principals} == {"ws_a"}
    assert statements.count("SELECT") == 1, statements.seen
    # last_used_at is written once per miss, not once per request in flight.
    assert statements.count("UPDATE") == 1, statements.seen
    assert cache.get(apikey.hash_key(key)) == principals[0] and not cache.pending
    statements.seen.clear()
    assert await keys.authenticate(sessions, key, cache=cache) == principals[0]
    assert statements.seen == []


async def test_unknown_keys_are_shared_too_and_never_cached(store: Store) -> None:
    forged = "rk_0a1b2c3d_" + "a" * 32
    cache = AuthCache(ttl=60, maxsize=10)
    lookups = [keys.authenticate(store.sessions, forged, cache=cache) for _ in range(8)]
    assert await asyncio.gather(*lookups) == [None] * 8
    assert store.statements.count("SELECT") == 1 and len(cache) == 0 and not cache.pending
    assert await keys.authenticate(store.sessions, forged, cache=cache) is None
    assert store.statements.count("SELECT") == 2


async def test_without_a_cache_every_request_reads_the_store(store: Store) -> None:
    key = await store.new_key()
    disabled = AuthCache(ttl=0, maxsize=10)
    results = await asyncio.gather(*(keys.authenticate(store.sessions, key, cache=disabled) for _ in range(4)))
    assert all(p is not None for p in results)
    assert store.statements.count("SELECT") == 4 and not disabled.pending
