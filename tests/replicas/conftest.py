from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.resilience.resilience_harness import Suite, only_when_selected, running_suite

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


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    """Two processes of every service (audit included: PostgreSQL serialises its chain head), two gateways
    and two journey workers, sharing one private redis-server (caps, rate limits and the event streams go
    through it; a private one keeps other stacks' workers on a shared Redis off this suite's streams)."""
    if not os.environ.get("RETAIN_DATABASE_URL", "").startswith("postgres"):
        pytest.skip("replica tests need PostgreSQL (RETAIN_DATABASE_URL): SQLite is one writer per file")
    # Generous deadlines: these tests are about exactness under contention (100 sends for one customer at
    # once on a small shared machine), not latency; the fault suite keeps the 2 s defaults.
    slow = {f"RETAIN_{name}_RPC_TIMEOUT_SECONDS": "20" for name in ("PROFILE", "DECISION", "CHANNELS", "AUDIT")}
    slow["RETAIN_GATEWAY_RPC_TIMEOUT_SECONDS"] = "45"
    with running_suite(tmp_path_factory.mktemp("replicas-var"), replicas=2, own_redis=True,
                       extra_env=slow) as suite:
        yield suite


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    only_when_selected(config, items, "tests/replicas")
