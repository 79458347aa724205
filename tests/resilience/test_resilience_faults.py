"""Faults under a steady load of events, decisions and sends; after each, nothing accepted is lost or doubled.

Each test: a fresh set of customers, ~12 requests/s from a background aiohttp loop (every request bounded by
REQUEST_TIMEOUT), the fault, recovery without any manual step, then the checks in `verify`. The suite runs on a
private PostgreSQL cluster and a private redis-server, so both can be crashed and restarted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.resilience.resilience_harness import PrivateCluster, Suite
from tests.resilience.resilience_load import (
    FaultReport,
    FlakyTwilio,
    Load,
    prepare,
    probe_ready,
    recovered,
    recovery_after,
    seen,
    verify,
)

pytestmark = [pytest.mark.e2e, pytest.mark.resilience]

# (down seconds, monotonic time the dependency came back) of one fault action
Action = Callable[[], tuple[float, float]]


def run_fault(
    suite: Suite, reports: list[FaultReport], fault: str, action: Action, *, index: int, channel: str = "email",
    allow_conn_errors: bool = False, twilio: FlakyTwilio | None = None, settle: float = 3.0,
    tolerated: frozenset[int] = frozenset(),
) -> None:
    probe_ready(suite)
    tag = f"{fault.replace(' ', '-')}-{int(time.time() * 1000) % 100000}"
    customers = prepare(suite, tag, phone_base=index * 100 + 10_000_000 + int(time.time()) % 1000 * 1000)
    load = Load(suite, customers, tag, channel=channel).start()
    time.sleep(2.0)  # steady state first
    began = time.monotonic()
    down, back = action()
    # Keep the load on until every kind of request has succeeded again and the latest ones all do (bounded:
    # a machine shared with other work may answer a few late requests past their deadline), then a little longer.
    deadline = time.monotonic() + 45
    while not recovered(list(load.outcomes), back) and time.monotonic() < deadline:
        time.sleep(0.25)
    time.sleep(settle)
    outcomes = load.stop()
    during = [o for o in outcomes if o.started >= began]
    delivered = (lambda: dict(twilio.delivered)) if twilio is not None else None
    problems = verify(suite, outcomes, fault=fault, allow_conn_errors=allow_conn_errors, delivered=delivered,
                      phones=customers.phones, tolerated=tolerated)
    reports.append(FaultReport(fault=fault, seen=seen(during), down_seconds=round(down, 2),
                               recovery_seconds=recovery_after(outcomes, back), requests=len(outcomes),
                               notes="; ".join(problems)[:300]))
    assert not problems, problems


def kill_and_restart(suite: Suite, instance: str, *, hold: float = 2.0) -> Action:
    def act() -> tuple[float, float]:
        start = time.monotonic()
        suite.stack.kill(instance)
        time.sleep(hold)
        back = time.monotonic()
        # Bounded, but generous: scoring alone imports for ~15 s on this 2-core machine under load.
        suite.stack.restart(instance, timeout=120)
        return time.monotonic() - start, back

    return act


@pytest.mark.parametrize("service", ["profile", "scoring", "decision", "channels", "audit", "gateway"])
def test_kill_9_and_restart(faulty: Suite, reports: list[FaultReport], service: str) -> None:
    index = ["profile", "scoring", "decision", "channels", "audit", "gateway"].index(service)
    run_fault(faulty, reports, f"kill -9 {service}", kill_and_restart(faulty, service), index=index,
              allow_conn_errors=service == "gateway")


def test_redis_restart(faulty: Suite, reports: list[FaultReport]) -> None:
    run_fault(faulty, reports, "kill -9 redis", kill_and_restart(faulty, "redis"), index=6)


def test_dependency_slower_than_its_deadline(faulty: Suite, reports: list[FaultReport]) -> None:
    def act() -> tuple[float, float]:
        start = time.monotonic()
        faulty.stack.pause("scoring")  # past the 2 s RPC deadline of its callers
        time.sleep(4.0)
        back = time.monotonic()
        faulty.stack.resume("scoring")
        return back - start, back

    run_fault(faulty, reports, "SIGSTOP scoring 4s", act, index=7)


def test_provider_errors_then_times_out(
    faulty: Suite, reports: list[FaultReport], twilio: tuple[Any, FlakyTwilio]
) -> None:
    server, responder = twilio

    def act() -> tuple[float, float]:
        start = time.monotonic()
        responder.mode = "error"
        time.sleep(3.0)
        responder.mode = "hang"  # past the adapter's 1 s timeout
        time.sleep(3.0)
        back = time.monotonic()
        responder.mode = "ok"
        return back - start, back

    try:
        run_fault(faulty, reports, "twilio 500s then timeouts", act, index=8, channel="sms", twilio=responder)
    finally:
        responder.mode = "ok"
    assert responder.answered["error"] and responder.answered["hang"], responder.answered
    assert not server.take_violations()


def test_postgres_restart(faulty: Suite, postgres: PrivateCluster | None, reports: list[FaultReport]) -> None:
    """Last in the module: every service loses every database connection at once."""
    if postgres is None:
        pytest.skip("restarting PostgreSQL needs a private cluster (PostgreSQL binaries), never the shared one")

    def act() -> tuple[float, float]:
        start = time.monotonic()
        postgres.stop("immediate")  # a crash: no checkpoint, every connection cut
        time.sleep(2.0)
        back = time.monotonic()
        postgres.start()
        return time.monotonic() - start, back

    # While PostgreSQL is down the services answer UNAVAILABLE, so clients see 503 + Retry-After, never 502.
    run_fault(faulty, reports, "restart postgresql", act, index=9)
