"""Load generation and measurement for the benchmarks: aiohttp (faster than the things measured), every loop
bounded, and the CPU each process of the system under test spent per answered request."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from retain_kit.testing import run_paced


async def ok(resp: aiohttp.ClientResponse) -> None:
    """Read the answer; a 4xx/5xx is an error (counted by the loops, not fatal)."""
    if resp.status >= 400:
        raise RuntimeError(f"{resp.status}: {await resp.text()}")
    await resp.read()


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Measured:
    rate: float
    achieved: float
    errors: int
    p50_ms: float
    p99_ms: float
    cpu_ms: dict[str, float]  # CPU per answered request, per process

    @property
    def cpu_total_ms(self) -> float:
        return sum(self.cpu_ms.values())

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in self.cpu_ms.items())
        return (f"{self.rate:.0f} req/s: achieved {self.achieved:.0f}, {self.errors} errors, p50 {self.p50_ms:.2f} "
                f"p99 {self.p99_ms:.2f} ms, CPU {self.cpu_total_ms:.2f} ms/request ({parts})")


def measure_paced(url: str, pids: dict[str, int], path_of: Callable[[int], str], rate: float,
                  headers: dict[str, str], seconds: float = 4.0) -> Measured:
    """Paced GETs (the i-th of `path_of(i)`) with the CPU each process spent per answered request."""
    async def get(session: aiohttp.ClientSession, i: int) -> None:
        async with session.get(path_of(i)) as resp:
            await ok(resp)

    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    lat, achieved, errors = asyncio.run(paced(get, rate=rate, seconds=seconds, base=url, headers=headers))
    answered = max(len(lat), 1)
    cpu = {name: (cpu_seconds(pid) - before[name]) * 1000 / answered for name, pid in pids.items()}
    if not lat:
        return Measured(rate, achieved, errors, float("inf"), float("inf"), cpu)
    return Measured(rate, achieved, errors, statistics.median(lat) * 1000, percentile(lat, 0.99) * 1000, cpu)
