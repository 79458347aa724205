"""Admission control: a bounded number of requests in flight per gateway process, the excess refused fast.

Past capacity, queueing only adds latency until clients time out while the services keep working on answers
nobody reads, and goodput collapses. So each pool admits at most `limit` requests at once; a request that
finds every slot busy waits, first come first served, at most `wait_seconds` for one and is otherwise
answered 503 `overloaded` with `Retry-After` at once. Two pools, so a burst of reads cannot starve
ingestion and a flood of events cannot starve reads: "ingest" (the Segment routes, /v1/track … /v1/batch)
and "default" (everything else, provider webhooks included: providers retry). Health, the console's files
and the API docs are never held back. Pure asyncio and per process: no shared state, no extra round trip.

An admitted request's downstream calls each still get the full RPC deadline (`timeout=` is set per call),
however long it waited for its slot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import asynccontextmanager

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from retain_gateway.errors import error_body

log = logging.getLogger(__name__)

DEFAULT = "default"
INGEST = "ingest"
EXEMPT_PATHS = frozenset(
    {"/healthz", "/livez", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/console"}
)
EXEMPT_PREFIXES = ("/console/",)
# Shed requests are logged as a count at most this often per pool, so overload cannot flood the logs.
REPORT_INTERVAL_SECONDS = 1.0


class Limiter:
    """At most `limit` holders at once; later arrivals wait in FIFO order up to `wait_seconds` for a slot.

    A freed slot passes straight to the longest waiter, so a newcomer never overtakes the queue.
    """

    def __init__(
        self, name: str, *, limit: int, wait_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self.name = name
        self.limit = limit
        self.wait_seconds = max(0.0, wait_seconds)
        self.shed_total = 0
        self._free = limit
        self._waiters: deque[asyncio.Future[bool]] = deque()
        self._clock = clock
        self._unreported = 0
        self._reported_at: float | None = None

    @property
    def in_flight(self) -> int:
        return self.limit - self._free

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> bool:
        """True with a slot held (give it back with `release`); False when none freed within the wait."""
        # A free slot means nobody is waiting: release() hands slots to waiters before freeing one.
        if self._free > 0:
            self._free -= 1
            return True
        if self.wait_seconds <= 0:
            self._shed()
            return False
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(waiter)
        expiry = loop.call_later(self.wait_seconds, self._expire, waiter)
        try:
            admitted = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                # The slot was handed over just as this waiter was cancelled: pass it on, never drop it.
                self.release()
            else:
                self._discard(waiter)
            raise
        finally:
            expiry.cancel()
        if not admitted:
            self._shed()
        return admitted

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return
        if self._free >= self.limit:
            raise RuntimeError(f"pool {self.name}: release() without a slot held")
        self._free += 1

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[bool]:
        """Yields whether a slot was had; a held slot is returned however the block ends."""
        admitted = await self.acquire()
        try:
            yield admitted
        finally:
            if admitted:
                self.release()

    def _expire(self, waiter: asyncio.Future[bool]) -> None:
        if not waiter.done():
            self._discard(waiter)
            waiter.set_result(False)

    def _discard(self, waiter: asyncio.Future[bool]) -> None:
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass

    def _shed(self) -> None:
        self.shed_total += 1
        self._unreported += 1
        now = self._clock()
        if self._reported_at is None or now - self._reported_at >= REPORT_INTERVAL_SECONDS:
            log.warning(
                "overloaded: pool %s shed %d request(s) since its last report (%d in all; %d in flight, "
                "wait %.0f ms)",
                self.name, self._unreported, self.shed_total, self.in_flight, self.wait_seconds * 1000,
            )
            self._reported_at = now
            self._unreported = 0


def pool_for(path: str, *, ingest_paths: Collection[str]) -> str | None:
    """The pool a request path counts against; None for the paths that are never held back."""
    if path in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIXES):
        return None
    return INGEST if path.rstrip("/") in ingest_paths else DEFAULT


def build_pools(*, default_limit: int, ingest_limit: int, wait_seconds: float) -> dict[str, Limiter]:
    """The pools with a limit; a limit of 0 leaves that pool's requests unlimited."""
    limits = {DEFAULT: default_limit, INGEST: ingest_limit}
    return {
        name: Limiter(name, limit=limit, wait_seconds=wait_seconds) for name, limit in limits.items() if limit > 0
    }


class AdmissionMiddleware:
    """Pure ASGI: a request holds a slot of its pool from before routing until its response is sent."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        pools: Mapping[str, Limiter],
        ingest_paths: Collection[str],
        retry_after_seconds: int,
    ) -> None:
        self.app = app
        self.pools = pools
        self.ingest_paths = frozenset(ingest_paths)
        self.retry_after = max(1, retry_after_seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        name = pool_for(scope["path"], ingest_paths=self.ingest_paths)
        limiter = self.pools.get(name) if name is not None else None
        if limiter is None:
            await self.app(scope, receive, send)
            return
        async with limiter.slot() as admitted:
            if admitted:
                await self.app(scope, receive, send)
            else:
                await self._overloaded(limiter)(scope, receive, send)

    def _overloaded(self, limiter: Limiter) -> JSONResponse:
        detail = (
            f"the gateway is serving its limit of {limiter.limit} {limiter.name} requests; "
            f"retry after {self.retry_after} s"
        )
        return JSONResponse(
            error_body("overloaded", detail), 503, headers={"Retry-After": str(self.retry_after)}
        )
