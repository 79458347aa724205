"""Benchmarks the lead's `make bench` calls: in-process gRPC ingestion rate and profile-read latency.

Both run the real servicer on a fresh database: a throwaway PostgreSQL schema when RETAIN_DATABASE_URL is
set, else a temporary SQLite file. `python -m retain_profile.bench` prints both.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from retain.profile.v1 import profile_pb2, profile_pb2_grpc
from retain_kit import migrations
from retain_kit.config import async_database_url
from retain_kit.db import create_engine, session_factory
from retain_kit.grpcserver import Registration, start
from retain_kit.protoconv import to_struct, to_timestamp
from sqlalchemy import text

from retain_profile.app import SERVICE_NAME
from retain_profile.audit_client import GrpcAuditSink
from retain_profile.publisher import DisabledPublisher, RedisEventPublisher
from retain_profile.server import ProfileServicer
from retain_profile.service import Profiles

if TYPE_CHECKING:
    from retain.profile.v1.profile_pb2_grpc import ProfileServiceAsyncStub

SERVICE_DIR = Path(__file__).resolve().parents[2]
EVENT_MIX = (
    ("Order Completed", 0.2), ("Product Viewed", 0.4), ("App Opened", 0.2), ("Product Added", 0.1),
    ("Message Opened", 0.1),
)


@dataclass(frozen=True)
class BenchResult:
    name: str
    value: float
    unit: str
    detail: str = ""


def make_events(count: int, *, customers: int, seed: int = 7, prefix: str = "") -> list[profile_pb2.Event]:
    rng = random.Random(seed)
    names = [n for n, _ in EVENT_MIX]
    weights = [w for _, w in EVENT_MIX]
    now = datetime.now(UTC)
    prefix = prefix or uuid.uuid4().hex[:8]
    out = []
    for i in range(count):
        name = rng.choices(names, weights)[0]
        props: dict[str, Any] = {"category": rng.choice(("shoes", "bags", "beauty"))}
        if name == "Order Completed":
            props.update(revenue=round(rng.uniform(100, 5000), 2), discount=round(rng.uniform(0, 100), 2))
        elif name == "Message Opened":
            props["channel"] = rng.choice(("email", "line", "sms"))
        out.append(
            profile_pb2.Event(
                message_id=f"{prefix}-{i}", type=profile_pb2.EVENT_TYPE_TRACK, event=name,
                # Every customer gets at least one event, so reads never miss.
                user_id=f"user-{i if i < customers else rng.randrange(customers)}", properties=to_struct(props),
                timestamp=to_timestamp(now - timedelta(minutes=rng.uniform(0, 60 * 24 * 365))),
            )
        )
    return out


@asynccontextmanager
async def serve_profile(database_url: str = "") -> AsyncIterator[tuple[ProfileServiceAsyncStub, str]]:
    """The real profile servicer on port 0 over a fresh database; yields (stub, database kind)."""
    url = database_url or os.environ.get("RETAIN_DATABASE_URL", "")
    schema: str | None = None
    with tempfile.TemporaryDirectory() as tmp:
        if url.startswith("postgres"):
            url, schema = async_database_url(url), f"bench_profile_{uuid.uuid4().hex[:8]}"
        else:
            url = f"sqlite+aiosqlite:///{tmp}/profile-bench.db"
        await asyncio.to_thread(migrations.upgrade, SERVICE_DIR, url, schema=schema)
        engine = create_engine(url, schema=schema)
        redis_url = os.environ.get("REDIS_URL", "")
        publisher = RedisEventPublisher.from_url(redis_url, maxlen=100_000) if redis_url else DisabledPublisher()
        audit = grpc.aio.insecure_channel("127.0.0.1:9")
        profiles = Profiles(session_factory(engine), audit=GrpcAuditSink(audit, timeout=1.0), publisher=publisher)
        server, port, _ = await start(
            [Registration(ProfileServicer(profiles), profile_pb2_grpc.add_ProfileServiceServicer_to_server,
                          SERVICE_NAME)],
            port=0,
        )
        client = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        try:
            yield profile_pb2_grpc.ProfileServiceStub(client), "postgresql" if schema else "sqlite"
        finally:
            await client.close()
            await server.stop(None)
            await publisher.close()
            await audit.close()
            if schema:
                async with engine.begin() as conn:
                    await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            await engine.dispose()


async def ingest_rate(
    *, events: int = 20_000, batch: int = 500, customers: int = 5_000, concurrency: int = 2, database_url: str = ""
) -> BenchResult:
    """Sustained IngestEvents throughput (events/s) with features kept current, over gRPC in-process."""
    data = make_events(events, customers=customers)
    batches = [data[i : i + batch] for i in range(0, len(data), batch)]
    async with serve_profile(database_url) as (stub, kind):
        await stub.IngestEvents(profile_pb2.IngestEventsRequest(workspace_id="ws_bench", events=batches[0]))
        queue = list(reversed(batches[1:]))

        async def worker() -> None:
            while queue:
                chunk = queue.pop()
                await stub.IngestEvents(profile_pb2.IngestEventsRequest(workspace_id="ws_bench", events=chunk))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    sent = sum(len(b) for b in batches[1:])
    return BenchResult("profile ingest (gRPC, in-process)", sent / elapsed, "events/s",
                       f"{kind}, batches of {batch}, {customers} customers, {concurrency} in flight")


async def read_latency(
    *, rate: float = 200.0, seconds: float = 5.0, customers: int = 2_000, database_url: str = ""
) -> BenchResult:
    """GetProfile p99 (ms) at a fixed request rate, customers looked up by their user id."""
    async with serve_profile(database_url) as (stub, kind):
        data = make_events(customers * 3, customers=customers)
        for i in range(0, len(data), 500):
            await stub.IngestEvents(profile_pb2.IngestEventsRequest(workspace_id="ws_bench", events=data[i : i + 500]))
        rng = random.Random(3)
        latencies: list[float] = []

        async def one() -> None:
            begin = time.perf_counter()
            await stub.GetProfile(profile_pb2.GetProfileRequest(
                workspace_id="ws_bench", customer_id=f"user-{rng.randrange(customers)}"))
            latencies.append((time.perf_counter() - begin) * 1000)

        tasks = []
        interval = 1.0 / rate
        start_at = time.perf_counter()
        for n in range(int(rate * seconds)):
            delay = start_at + n * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    ordered = sorted(latencies)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    return BenchResult("profile read p99 (gRPC GetProfile)", p99, "ms",
                       f"{kind}, {rate:.0f} req/s, p50 {statistics.median(ordered):.2f} ms, n={len(ordered)}")


async def main() -> None:
    for result in (await ingest_rate(), await read_latency()):
        print(f"{result.name:40s} {result.value:10.1f} {result.unit:9s} {result.detail}")  # noqa: T201


if __name__ == "__main__":
    asyncio.run(main())
