"""`statement_engine`: single-statement reads run on their own, outside any transaction, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from retain_kit.db import create_engine, statement_engine
from retain_kit.testing import DbTarget
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


async def _in_transaction(connection: AsyncConnection) -> bool:
    driver: Any = (await connection.get_raw_connection()).driver_connection
    if connection.dialect.name == "postgresql":
        return bool(driver.is_in_transaction())
    return bool(driver._conn.in_transaction)  # aiosqlite wraps the sqlite3 connection


async def test_reads_see_committed_rows_and_hold_no_transaction(db_target: DbTarget) -> None:
    url, schema = db_target.fresh("kit")
    engine = create_engine(url, schema=schema)
    try:
        async with engine.begin() as conn:
            if schema:
                await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            await conn.execute(text(f"CREATE TABLE {f'{schema}.' if schema else ''}notes (id INTEGER, body TEXT)"))
        reads = statement_engine(engine)
        for n in range(3):
            async with engine.begin() as conn:
                await conn.execute(text("INSERT INTO notes VALUES (:id, :body)"), {"id": n, "body": f"note {n}"})
            async with reads.connect() as conn:
                rows = (await conn.execute(text("SELECT id, body FROM notes ORDER BY id"))).all()
                # No BEGIN went before the statement (nor will a ROLLBACK follow): nothing is open after it.
                assert not await _in_transaction(conn)
            assert [tuple(r) for r in rows] == [(i, f"note {i}") for i in range(n + 1)]
        # Writes on the engine itself still run in transactions, whatever the reads did with its connections.
        async with engine.connect() as conn:
            await conn.execute(text("INSERT INTO notes VALUES (9, 'rolled back')"))
            assert await _in_transaction(conn)
            await conn.rollback()
        async with reads.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM notes"))).scalar_one() == 3
    finally:
        await engine.dispose()
