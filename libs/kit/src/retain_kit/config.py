"""Settings shared by every service: each service subclasses with its own env prefix."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

VAR_DIR = Path(os.environ.get("RETAIN_VAR_DIR", "var"))


def async_database_url(url: str) -> str:
    """Map plain URLs (postgresql://, sqlite:///) onto the async drivers the suite uses."""
    for plain, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("postgresql+psycopg://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    return url


class KitSettings(BaseSettings):
    """Base settings. `database_url` falls back to RETAIN_DATABASE_URL, then to a SQLite file."""

    model_config = SettingsConfigDict(env_prefix="RETAIN_", extra="ignore")

    service_name: str = "retain"
    database_url: str = ""
    # PostgreSQL schema for this service's tables; defaults to the service name.
    database_schema: str = ""
    redis_url: str = ""
    host: str = "127.0.0.1"
    port: int = 0
    log_level: str = "INFO"
    # Deadline for calls this service makes to others.
    rpc_timeout_seconds: float = 2.0

    @model_validator(mode="after")
    def _fallbacks(self) -> KitSettings:
        if not self.database_url:
            self.database_url = os.environ.get("RETAIN_DATABASE_URL", "") or (
                f"sqlite:///{VAR_DIR / (self.service_name + '.db')}"
            )
        self.database_url = async_database_url(self.database_url)
        if not self.redis_url:
            self.redis_url = os.environ.get("REDIS_URL", "")
        return self

    @property
    def schema(self) -> str | None:  # type: ignore[override]  # shadows pydantic's deprecated schema()
        """PostgreSQL schema owned by this service (one database may host several services)."""
        if not self.database_url.startswith("postgresql"):
            return None
        return self.database_schema or self.service_name


class Endpoints(BaseSettings):
    """Where each gRPC service listens; every caller reads the same RETAIN_<SERVICE>_ADDR variables."""

    model_config = SettingsConfigDict(env_prefix="RETAIN_", extra="ignore")

    profile_addr: str = "127.0.0.1:50051"
    scoring_addr: str = "127.0.0.1:50052"
    decision_addr: str = "127.0.0.1:50053"
    channels_addr: str = "127.0.0.1:50054"
    audit_addr: str = "127.0.0.1:50055"
