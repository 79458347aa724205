"""Alembic, one environment per service: `run_env` is what each service's env.py calls."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from retain_kit.config import async_database_url


def alembic_config(service_dir: Path, url: str, *, schema: str | None) -> Config:
    cfg = Config(str(service_dir / "alembic.ini"))
    cfg.set_main_option("script_location", str(service_dir / "migrations"))
    cfg.set_main_option("sqlalchemy.url", async_database_url(url).replace("%", "%%"))
    cfg.attributes["schema"] = schema
    return cfg


def upgrade(service_dir: Path, url: str, *, schema: str | None) -> None:
    """Bring a service's database to the newest revision (run before serving)."""
    if url.startswith("sqlite"):
        db_path = url.split(":///", 1)[-1]
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(service_dir, url, schema=schema), "head")


def run_env(metadata: MetaData) -> None:
    """Body of every service's migrations/env.py (online mode, async engine)."""
    cfg = context.config
    url = cfg.get_main_option("sqlalchemy.url") or ""
    schema = cfg.attributes.get("schema")

    def do_run(connection: Connection) -> None:
        if url.startswith("sqlite"):
            # WAL is a property of the file: set once here, no serving connection has to switch the mode
            # (which needs the file to itself, so it fails while other processes are reading and writing).
            connection.exec_driver_sql("PRAGMA journal_mode=WAL")
            connection.commit()
        if schema:
            connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            connection.execute(text(f'SET search_path TO "{schema}"'))
            connection.commit()
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table_schema=schema,
            render_as_batch=url.startswith("sqlite"),
        )
        with context.begin_transaction():
            context.run_migrations()

    async def main() -> None:
        engine = create_async_engine(url, poolclass=pool.NullPool)
        async with engine.connect() as connection:
            await connection.run_sync(do_run)
        await engine.dispose()

    asyncio.run(main())
