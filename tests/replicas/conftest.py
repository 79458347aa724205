from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.resilience.resilience_harness import (
    ConnectionPeak,
    Suite,
    only_when_selected,
    private_postgres,
    running_suite,
)

NOTES: list[str] = []


@pytest.fixture(scope="session")
def notes() -> list[str]:
    """Measurements a test wants shown after the run (how the work was split, how long it took)."""
    return NOTES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if NOTES:
        terminalreporter.write_line("")
        for note in NOTES:
            terminalreporter.write_line(f"replicas: {note}")


# Each process's pool may hold 20 connections (retain_kit.db: 10 + 10 overflow): 14 processes here (two of each
# service and two journey workers) may ask for 280 at once, past PostgreSQL's default of 100.
MAX_CONNECTIONS = 300
# How often the journey workers look for new event streams (5 s by default).
DISCOVER_SECONDS = 1.0


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory, notes: list[str]) -> Iterator[Suite]:
    """Two processes of every service (audit included: PostgreSQL serialises its chain head), two gateways
    and two journey workers, sharing one private redis-server (caps, rate limits and the event streams go
    through it; a private one keeps other stacks' workers on a shared Redis off this suite's streams) and a
    private PostgreSQL cluster (RETAIN_DATABASE_URL's where none can be started)."""
    with private_postgres(max_connections=MAX_CONNECTIONS, required=False) as pg:
        if pg is None and not os.environ.get("RETAIN_DATABASE_URL", "").startswith("postgres"):
            pytest.skip("replica tests need PostgreSQL (binaries or RETAIN_DATABASE_URL): SQLite is one writer "
                        "per file")
        # Generous deadlines: these tests are about exactness under contention (100 sends for one customer
        # at once on a small shared machine), not latency; the fault suite keeps the 2 s defaults.
        env = {f"RETAIN_{name}_RPC_TIMEOUT_SECONDS": "20" for name in ("PROFILE", "DECISION", "CHANNELS", "AUDIT")}
        env["RETAIN_GATEWAY_RPC_TIMEOUT_SECONDS"] = "45"
        env["RETAIN_DECISION_JOURNEY_DISCOVER_SECONDS"] = str(DISCOVER_SECONDS)
        with running_suite(tmp_path_factory.mktemp("replicas-var"), replicas=2, own_redis=True, extra_env=env,
                           database_url=pg.url if pg else None) as suite:
            if pg is None:
                yield suite
                return
            with ConnectionPeak(pg.url) as connections:
                yield suite
            notes.append(f"peak PostgreSQL client connections of the two-replica suite: {connections.peak} "
                         f"(max_connections {MAX_CONNECTIONS})")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    only_when_selected(config, items, "tests/replicas")
