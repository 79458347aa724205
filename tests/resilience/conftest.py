from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from tests.resilience.resilience_harness import (
    PrivateCluster,
    Suite,
    only_when_selected,
    private_postgres,
    running_suite,
)
from tests.resilience.resilience_load import FaultReport, FlakyTwilio, openapi_mock

REPORTS: list[FaultReport] = []
REPORT_FILE = Path(__file__).resolve().parents[2] / "var" / "resilience.json"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    only_when_selected(config, items, "tests/resilience")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not REPORTS:
        return
    REPORT_FILE.parent.mkdir(parents=True, exist_ok=True)
    REPORT_FILE.write_text(json.dumps([asdict(r) for r in REPORTS], indent=2, ensure_ascii=False))
    write = terminalreporter.write_line
    write("")
    write(f"resilience: what clients saw per fault (also in {REPORT_FILE})")
    write(f"{'fault':<26} {'down s':>6} {'recover s':>9} {'reqs':>5}  seen (status counts per request kind)")
    for r in REPORTS:
        recovery = f"{r.recovery_seconds:.2f}" if r.recovery_seconds is not None else "-"
        seen = "; ".join(f"{kind} {counts}" for kind, counts in r.seen.items())
        write(f"{r.fault:<26} {r.down_seconds:>6.1f} {recovery:>9} {r.requests:>5}  {seen}")
        if r.notes:
            write(f"{'':<26} {r.notes}")


@pytest.fixture(scope="session")
def reports() -> list[FaultReport]:
    return REPORTS


@pytest.fixture(scope="module")
def twilio() -> Iterator[tuple[Any, FlakyTwilio]]:
    mock = openapi_mock()
    responder = FlakyTwilio()
    server = mock.ContractServer(mock.TWILIO_SPEC, responder).start()
    yield server, responder
    server.stop()


def channels_env(twilio_url: str) -> dict[str, str]:
    """sms through the Twilio adapter at the local fake; retries fast and long enough to outlast a fault."""
    return {
        "RETAIN_CHANNELS_PROVIDERS": json.dumps({"sms": "twilio"}),
        "RETAIN_CHANNELS_PROVIDER_CONFIG": json.dumps({"sms": {
            "account_sid": "AC" + "0" * 32, "auth_token": "resilience", "from_number": "+6620000000",
            "base_url": twilio_url, "timeout_seconds": 1.0}}),
        "RETAIN_CHANNELS_MAX_ATTEMPTS": "60",
        "RETAIN_CHANNELS_BACKOFF_BASE_SECONDS": "0.2",
        "RETAIN_CHANNELS_BACKOFF_MAX_SECONDS": "1.0",
        "RETAIN_CHANNELS_OUTBOX_POLL_SECONDS": "0.5",
        # a row claimed by a channels process that was killed is taken over after this long
        "RETAIN_CHANNELS_OUTBOX_LEASE_SECONDS": "5",
    }


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivateCluster | None]:
    """A private PostgreSQL cluster (ours to restart); None where none can be started."""
    with private_postgres(required=False) as pg:
        yield pg


@pytest.fixture(scope="module")
def faulty(
    tmp_path_factory: pytest.TempPathFactory, twilio: tuple[Any, FlakyTwilio], postgres: PrivateCluster | None
) -> Iterator[Suite]:
    """One process per service and a private redis-server, on the private cluster (without one: on
    RETAIN_DATABASE_URL's PostgreSQL or the embedded SQLite)."""
    server, _ = twilio
    with running_suite(tmp_path_factory.mktemp("resilience-var"), own_redis=True, extra_env=channels_env(server.url),
                       database_url=postgres.url if postgres else None) as suite:
        yield suite
