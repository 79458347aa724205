"""Database base class, async engine and session factory (SQLite by default, PostgreSQL by URL)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import MetaData, event, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base; each service's models use their own subclass's metadata."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def make_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING_CONVENTION)


def create_engine(url: str, *, schema: str | None = None, echo: bool = False) -> AsyncEngine:
    """Async engine; on PostgreSQL the service's schema is first on the search path."""
    kwargs: dict[str, Any] = {"echo": echo}
    if url.startswith("postgresql"):
        if schema:
            kwargs["connect_args"] = {"server_settings": {"search_path": schema}}
        # Per engine, so per process: a suite of seven processes (more with replicas) must stay well inside
        # PostgreSQL's max_connections (100 by default) at its peak of pool_size + max_overflow each.
        kwargs["pool_size"] = int(os.environ.get("RETAIN_DATABASE_POOL_SIZE", "5"))
        kwargs["max_overflow"] = int(os.environ.get("RETAIN_DATABASE_MAX_OVERFLOW", "5"))
    elif url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30}
    engine = create_async_engine(url, **kwargs)
    if url.startswith("sqlite"):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    elif url.startswith("postgresql"):
        ping_when_idle(engine, float(os.environ.get("RETAIN_DATABASE_PING_IDLE_SECONDS", "2")))
    from retain_kit.telemetry import instrument_engine

    instrument_engine(engine)
    return engine


def ping_when_idle(engine: AsyncEngine, idle_seconds: float) -> None:
    """Pessimistic disconnect handling only for connections that sat idle in the pool for `idle_seconds`.

    SQLAlchemy's pool_pre_ping checks every checkout, and asyncpg's ping is a transaction (BEGIN, `;`,
    ROLLBACK): three round trips in front of a one-statement read, most of a profile read's cost. Under load
    connections are idle for milliseconds and skip the check; a connection that does fail in use is a
    disconnect, on which SQLAlchemy recycles every idle connection of the pool (optimistic handling), so a
    PostgreSQL restart costs a process at most the requests in flight at that moment."""
    pool = engine.sync_engine.pool

    @event.listens_for(pool, "checkin")
    def _idle_since(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info["idle_since"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < idle_seconds:
            return
        try:
            dbapi_connection.ping()
        except Exception as exc:
            # The pool replaces the connection and tries again (up to three times) before failing.
            raise DisconnectionError(f"pooled connection is dead: {exc}") from exc


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # The busy timeout first: switching to WAL needs a lock, and another process's worker may hold one (a
    # connection made while it did failed at once with "database is locked").
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def upsert(
    dialect: str, table: Any, *, keys: Iterable[str], update: Iterable[str]
) -> Any:
    """INSERT ... ON CONFLICT (keys) DO UPDATE SET update = excluded, for PostgreSQL and SQLite alike;
    execute it with a list of row dicts to write a whole batch in one statement."""
    stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(table)
    return stmt.on_conflict_do_update(
        index_elements=list(keys), set_={name: stmt.excluded[name] for name in update}
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def statement_engine(engine: AsyncEngine) -> AsyncEngine:
    """`engine` for reads that are one SELECT each and need no transaction around it, configured once.

    PostgreSQL: autocommit, which spares the BEGIN asyncpg would send before the statement and the ROLLBACK
    after it (switching a pooled connection's isolation level there is a Python attribute, no round trip).
    SQLite: the engine as it is. Its driver begins a transaction only before a write, so a SELECT already runs
    on its own, whereas an AUTOCOMMIT option would set the isolation level on every checkout and restore it
    (with a PRAGMA) on every checkin: nine aiosqlite thread hops per read instead of five.
    Not for writes: on SQLite a write through it stays uncommitted until the caller commits."""
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine


async def drop_schemas(url: str, schemas: Iterable[str]) -> None:
    """Drop PostgreSQL schemas (tests and benchmarks give each run schemas of its own)."""
    names = list(schemas)
    if not names:
        return
    from retain_kit.config import async_database_url

    engine = create_async_engine(async_database_url(url))
    async with engine.begin() as conn:
        for schema in names:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    await engine.dispose()
