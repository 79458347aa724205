"""Load generation for the benchmarks: aiohttp, faster than the things measured; every loop bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
from retain_kit.testing import run_paced


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


async def hammer(
    call: Callable[[aiohttp.ClientSession, int], Awaitable[None]], *, total: int, concurrency: int, base: str,
    headers: dict[str, str], max_seconds: float = 60.0,
) -> tuple[list[float], float]:
    """Run `total` calls with `concurrency` workers; returns per-call latencies (s) and wall time."""
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(total))
    stop_at = time.monotonic() + max_seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base, headers=headers, connector=connector) as session:

        async def worker() -> None:
            for i in counter:
                if time.monotonic() > stop_at:
                    return
                start = time.perf_counter()
                try:
                    await call(session, i)
                except Exception as exc:
                    # Counted, not fatal: an overloaded suite answers 503 and the table should still print.
                    errors.append(str(exc)[:200])
                    continue
                latencies.append(time.perf_counter() - start)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        if errors:
            print(f"  {len(errors)} failed requests, e.g. {errors[0]}")  # noqa: T201
        return latencies, time.perf_counter() - began


async def paced(
    call: Callable[[aiohttp.ClientSession, int], Awaitable[None]], *, rate: float, seconds: float, base: str,
    headers: dict[str, str],
) -> tuple[list[float], float, int]:
    """Open loop: requests start on schedule whatever earlier ones do. Returns latencies, achieved rate, errors."""
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(base, headers=headers, connector=connector, timeout=timeout) as session:

        async def one(i: int) -> None:
            nonlocal errors
            start = time.perf_counter()
            try:
                await call(session, i)
            except Exception:
                errors += 1
                return
            latencies.append(time.perf_counter() - start)

        wall = await run_paced(one, rate=rate, seconds=seconds)
    return latencies, len(latencies) / wall, errors
