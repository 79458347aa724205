"""A steady, bounded load of events, decisions and sends, and the checks every fault must pass afterwards."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import httpx

from tests.resilience.resilience_harness import WINBACK_OFFER, Suite, consented_customer

ROOT = Path(__file__).resolve().parents[2]
REQUEST_TIMEOUT = 8.0  # every client request is bounded; a reply slower than this counts as a hang
TAIL = 8  # the suite counts as recovered once this many requests in a row (the latest) succeeded


def openapi_mock() -> ModuleType:
    """The channels service's spec-validating provider server, loaded by path (its package name `support`
    collides with tests/support)."""
    name = "retain_resilience_openapi_mock"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "services/channels/tests/support/openapi_mock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class FlakyTwilio:
    """Twilio's Messages API, switchable from the test: `ok`, `error` (500 at once) or `hang` (answers only
    after the adapter's timeout, and then with a 500, so a timed-out attempt never delivered anything)."""

    def __init__(self, hang_seconds: float = 2.5) -> None:
        mock = openapi_mock()
        self._reply = mock.Reply
        self._ok = mock.TwilioResponder()
        self.mode = "ok"
        self.hang_seconds = hang_seconds
        self.delivered: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, req: Any) -> Any:
        mode = self.mode
        with self._lock:
            self.answered[mode] += 1
        if mode == "hang":
            time.sleep(self.hang_seconds)
        if mode != "ok":
            return self._reply(500, {"code": 20500, "message": "internal server error", "status": 500})
        reply = self._ok(req)
        if reply.status == 201:
            with self._lock:
                self.delivered[req.form().get("To", "")] += 1
        return reply


@dataclass
class Outcome:
    kind: str
    started: float
    ended: float
    status: int | str
    retry_after: str | None
    customer: str
    ref: str
    body: dict[str, Any]


@dataclass
class Customers:
    events: list[str]
    consented: list[str]
    refused: list[str]
    phones: dict[str, str] = field(default_factory=dict)


def prepare(suite: Suite, tag: str, *, phone_base: int) -> Customers:
    consented = [f"{tag}-ok{i}" for i in range(3)]
    refused = [f"{tag}-no0"]
    phones: dict[str, str] = {}
    with suite.client() as client:
        for i, user in enumerate(consented + refused):
            phone = f"08{phone_base + i:08d}"
            phones[user] = "+66" + phone[1:]
            consented_customer(client, user, consent=user in consented, phone=phone)
    return Customers(events=[f"{tag}-ev{i}" for i in range(4)], consented=consented, refused=refused, phones=phones)


class Load:
    """Requests at a fixed rate in the background (one task each, so a slow reply never slows the pace)."""

    def __init__(self, suite: Suite, customers: Customers, tag: str, *, rate: float = 12.0, channel: str = "email"):
        self.suite = suite
        self.customers = customers
        self.tag = tag
        self.rate = rate
        self.channel = channel
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Load:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Outcome]:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(REQUEST_TIMEOUT + 30)
        assert not self._thread.is_alive(), "load generator did not stop"
        return self.outcomes

    def _request(self, i: int) -> tuple[str, str, str, str, dict[str, Any] | None, str]:
        """(kind, method, path, customer, json body, ref) for the i-th request."""
        c = self.customers
        slot = i % 7
        if slot in (0, 3):
            user = c.events[i % len(c.events)]
            ref = f"{self.tag}-e{i}"
            return "event", "POST", "/v1/track", user, {"userId": user, "event": "Product Viewed", "messageId": ref,
                                                          "properties": {"category": "skincare"}}, ref
        if slot in (1, 4):
            user = c.consented[i % len(c.consented)]
            return "decision", "GET", f"/v1/customers/{user}/next-best-actions?placement=home", user, None, ""
        user = c.refused[0] if slot == 6 else c.consented[i % len(c.consented)]
        ref = f"{self.tag}-m{i}"
        kind = "send_refused" if slot == 6 else "send"
        return kind, "POST", "/v1/messages", user, {
            "customer_id": user, "channel": self.channel, "offer_id": WINBACK_OFFER, "purpose": "marketing",
            "idempotency_key": ref}, ref

    async def _run(self, max_seconds: float = 120.0) -> None:
        base = self.suite.stack.gateway_url
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        deadline = time.monotonic() + max_seconds
        async with aiohttp.ClientSession(base, headers=self.suite.headers, timeout=timeout) as session:

            async def one(i: int) -> None:
                kind, method, path, user, body, ref = self._request(i)
                started = time.monotonic()
                status: int | str
                retry_after: str | None = None
                payload: dict[str, Any] = {}
                try:
                    async with session.request(method, path, json=body) as resp:
                        status = resp.status
                        retry_after = resp.headers.get("Retry-After")
                        payload = await resp.json(content_type=None) or {}
                except TimeoutError:
                    status = "timeout"
                except aiohttp.ClientError as exc:
                    status = "conn_error"
                    payload = {"error": type(exc).__name__}
                self.outcomes.append(Outcome(kind, started, time.monotonic(), status, retry_after, user, ref, payload))

            tasks = []
            i = 0
            next_at = time.monotonic()
            while not self._stop.is_set() and time.monotonic() < deadline:
                tasks.append(asyncio.create_task(one(i)))
                i += 1
                next_at += 1.0 / self.rate
                await asyncio.sleep(max(next_at - time.monotonic(), 0))
            await asyncio.gather(*tasks)


@dataclass
class FaultReport:
    fault: str
    seen: dict[str, dict[str, int]]
    down_seconds: float
    recovery_seconds: float | None
    requests: int
    notes: str = ""


def _ok(o: Outcome) -> bool:
    return isinstance(o.status, int) and 200 <= o.status < 300


def recovery_after(outcomes: list[Outcome], since: float) -> float | None:
    """Seconds from `since` until every kind of request had succeeded again (requests started after it)."""
    kinds = {o.kind for o in outcomes}
    first: dict[str, float] = {}
    for o in sorted(outcomes, key=lambda o: o.ended):
        if o.started >= since and _ok(o) and o.kind not in first:
            first[o.kind] = o.ended
    if set(first) != kinds:
        return None
    return max(first.values()) - since


def recovered(outcomes: list[Outcome], since: float) -> bool:
    """Every kind of request succeeded again after `since`, and the last TAIL requests all did."""
    return recovery_after(outcomes, since) is not None and all(_ok(o) for o in _tail(outcomes))


def _tail(outcomes: list[Outcome]) -> list[Outcome]:
    return sorted(outcomes, key=lambda o: o.started)[-TAIL:]


def wait_until(check: Callable[[], str | None], *, seconds: float) -> str | None:
    """Polls `check` (None = satisfied) until it holds or the time is up; returns the last complaint."""
    deadline = time.monotonic() + seconds
    while True:
        problem = check()
        if problem is None or time.monotonic() > deadline:
            return problem
        time.sleep(0.5)


def verify(
    suite: Suite, outcomes: list[Outcome], *, fault: str, allow_conn_errors: bool = False,
    delivered: Callable[[], dict[str, int]] | None = None, phones: dict[str, str] | None = None,
    tolerated: frozenset[int] = frozenset(),
) -> list[str]:
    """The guarantees after a fault; returns what broke (empty: all held)."""
    problems: list[str] = []
    hangs = [o for o in outcomes if o.status == "timeout"]
    if hangs:
        problems.append(f"{len(hangs)} requests hung past {REQUEST_TIMEOUT}s ({Counter(o.kind for o in hangs)})")
    for o in outcomes:
        if o.status == "conn_error" and not allow_conn_errors:
            problems.append(f"{o.kind}: connection error while the gateway was up")
        elif isinstance(o.status, int) and o.status >= 300 and o.status not in tolerated \
                and (o.status != 503 or not o.retry_after):
            problems.append(f"{o.kind}: {o.status} {o.body} (want 503 with Retry-After)")
    if problems:
        return problems[:10]

    # No accepted event lost; nothing counted that was never sent.
    accepted: Counter[str] = Counter(o.customer for o in outcomes if o.kind == "event" and _ok(o))
    attempted: Counter[str] = Counter(o.customer for o in outcomes if o.kind == "event")
    with suite.client(timeout=15) as client:
        for user, attempts in attempted.items():
            reply = client.get(f"/v1/customers/{user}")
            if accepted[user] == 0 and reply.status_code == 404:
                continue
            if reply.status_code != 200:
                problems.append(f"profile of {user}: {reply.status_code} {reply.text[:200]}")
                continue
            count = reply.json()["events_count"]
            if not accepted[user] <= count <= attempts:
                problems.append(f"{user}: events_count {count}, accepted {accepted[user]}, attempted {attempts}")

    # Consent holds: a refused customer's send is never accepted.
    for o in outcomes:
        if o.kind == "send_refused" and _ok(o) and o.body.get("status") != "suppressed":
            problems.append(f"send without consent answered {o.status} {o.body}")
    sends = [o for o in outcomes if o.kind in ("send", "send_refused")]
    accepted_keys = {o.ref for o in sends if _ok(o) and o.body.get("status") in ("sent", "queued", "duplicate")}
    refused_keys = {o.ref for o in sends if o.kind == "send_refused"}
    all_keys = {o.ref for o in sends}

    if delivered is None:
        def check() -> str | None:
            keys = (line["idempotency_key"] for line in suite.sent_lines())
            lines = Counter(key for key in keys if key in all_keys)
            dup = {k: n for k, n in lines.items() if n > 1}
            missing = accepted_keys - set(lines)
            leaked = refused_keys & set(lines)
            if dup or missing or leaked:
                return f"duplicated {dup}, lost {sorted(missing)[:5]} of {len(accepted_keys)}, without consent {leaked}"
            return None
    else:
        assert phones is not None
        # The provider carries no key of ours, so count per customer (each has its own phone): every accepted
        # send delivered, nothing beyond what was attempted (a 503'd send may still go out, once).
        wanted = Counter(o.customer for o in sends if o.ref in accepted_keys)
        tried = Counter(o.customer for o in sends if o.kind == "send")

        def check() -> str | None:
            got = delivered()
            wrong = {user: (got.get(phones[user], 0), wanted[user], tried[user]) for user in tried
                     if not wanted[user] <= got.get(phones[user], 0) <= tried[user]}
            leaked = {user: got[phones[user]] for user in phones if phones[user] in got and user not in tried}
            if wrong or leaked:
                return f"deliveries (got, accepted, attempted) {wrong}, without consent {leaked}"
            return None

    problem = wait_until(check, seconds=45)
    if problem:
        problems.append(problem)
    # Recovery without manual steps: everything answered again at the end.
    tail = _tail(outcomes)
    if not all(_ok(o) for o in tail):
        problems.append(f"not recovered at the end: {[(o.kind, o.status) for o in tail]}")
    return problems


def seen(outcomes: list[Outcome]) -> dict[str, dict[str, int]]:
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    for o in outcomes:
        label = str(o.status)
        if o.kind.startswith("send") and isinstance(o.status, int) and o.status < 300:
            label = f"{o.status} {o.body.get('status', '')}".strip()
        by_kind[o.kind][label] += 1
    return {kind: dict(sorted(counts.items())) for kind, counts in sorted(by_kind.items())}


def probe_ready(suite: Suite) -> None:
    """Before a fault: the suite answers every kind of request (the previous fault is fully behind us)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with httpx.Client(base_url=suite.stack.gateway_url, headers=suite.headers, timeout=5) as client:
                if client.get("/healthz").status_code == 200:
                    return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("suite not healthy before the fault")
