"""Benchmarks the lead's `make bench` calls: in-process gRPC ingestion rate and profile-read latency.

Both run the real servicer on a fresh database: a throwaway PostgreSQL schema when RETAIN_DATABASE_URL is
set, else a temporary SQLite file. `python -m retain_profile.bench` prints both.
"""

from __future__ import annotations

import asyncio
import json
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
from retain_kit.db import create_engine, drop_schemas, session_factory
from retain_kit.grpcserver import Registration, start
from retain_kit.protoconv import to_struct, to_timestamp

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
            await engine.dispose()
            if schema:
                await drop_schemas(url, [schema])


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


def segment_batch(start: int, count: int, *, customers: int, run: str, seed: int = 11) -> list[dict[str, Any]]:
    """`count` Segment track messages in the same event mix as make_events, for the gateway's /v1/batch."""
    rng = random.Random(seed + start)
    names = [n for n, _ in EVENT_MIX]
    weights = [w for _, w in EVENT_MIX]
    now = datetime.now(UTC)
    out = []
    for i in range(start, start + count):
        name = rng.choices(names, weights)[0]
        props: dict[str, Any] = {"category": rng.choice(("shoes", "bags", "beauty"))}
        if name == "Order Completed":
            props.update(revenue=round(rng.uniform(100, 5000), 2), discount=round(rng.uniform(0, 100), 2))
        elif name == "Message Opened":
            props["channel"] = rng.choice(("email", "line", "sms"))
        stamp = now - timedelta(minutes=rng.uniform(0, 60 * 24 * 365))
        out.append({
            "type": "track", "messageId": f"{run}-{i}", "event": name, "properties": props,
            "userId": f"{run}-user-{i if i < customers else rng.randrange(customers)}",
            "timestamp": stamp.isoformat(),
        })
    return out


async def gateway_batch_rate(
    gateway_url: str, api_key: str, seconds: float = 10.0, *, concurrency: int = 4, batch: int = 500,
    customers: int = 5_000, warmup_batches: int = 12,
) -> BenchResult:
    """Sustained events/s through a running gateway's POST /v1/batch (features kept current by profile).

    `concurrency` aiohttp connections each keep one 500-event batch in flight; payloads are built before the
    clock starts so the load generator is never the bottleneck. The first `warmup_batches` create the
    customers and are not timed."""
    import aiohttp

    run = uuid.uuid4().hex[:8]
    expected = warmup_batches + int(seconds * 20_000 / batch) + concurrency
    bodies = [
        json.dumps({"batch": segment_batch(i * batch, batch, customers=customers, run=run)}).encode()
        for i in range(expected)
    ]
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(gateway_url, headers=headers, connector=connector) as session:

        failed: list[str] = []

        async def post(body: bytes) -> int:
            async with session.post("/v1/batch", data=body) as resp:
                reply = await resp.json()
                if resp.status >= 400:
                    failed.append(f"{resp.status} {str(reply)[:120]}")
                    return 0
                return int(reply["accepted"]) + int(reply["duplicates"])

        for chunk in range(0, warmup_batches, concurrency):
            await asyncio.gather(*(post(b) for b in bodies[chunk : min(chunk + concurrency, warmup_batches)]))
        queue = iter(bodies[warmup_batches:])
        counted = 0
        latencies: list[float] = []
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal counted
            for body in queue:
                if time.perf_counter() > stop_at:
                    return
                begin = time.perf_counter()
                # Awaited first: `counted += await ...` would read `counted` before the await and lose the
                # other workers' updates made meanwhile.
                stored = await post(body)
                counted += stored
                latencies.append(time.perf_counter() - begin)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    p50 = statistics.median(latencies) * 1000 if latencies else 0.0
    return BenchResult("profile ingest via gateway /v1/batch", counted / elapsed, "events/s",
                       f"{len(latencies)} batches of {batch}, {concurrency} in flight, {customers} customers, "
                       f"batch p50 {p50:.0f} ms, {len(failed)} failed" + (f" (first: {failed[0]})" if failed else ""))


async def gateway_read_latency(
    gateway_url: str, api_key: str, references: list[str], *, rate: float = 200.0, seconds: float = 5.0
) -> BenchResult:
    """GET /v1/customers/{id} p99 (ms) at a paced request rate (open loop: late responses do not slow it)."""
    import aiohttp

    rng = random.Random(5)
    headers = {"Authorization": f"Bearer {api_key}"}
    latencies: list[float] = []
    failures = 0
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(gateway_url, headers=headers, connector=connector) as session:

        async def one() -> None:
            nonlocal failures
            begin = time.perf_counter()
            async with session.get(f"/v1/customers/{rng.choice(references)}") as resp:
                await resp.read()
                failures += resp.status != 200
            latencies.append((time.perf_counter() - begin) * 1000)

        for _ in range(int(rate)):  # warm-up (connections, caches), one request at a time
            await one()
        # The unloaded service time: what one request costs end to end with nothing else in flight.
        sequential = statistics.median(latencies[len(latencies) // 2 :])
        latencies.clear()
        tasks = []
        start_at = time.perf_counter()
        for n in range(int(rate * seconds)):
            delay = start_at + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
        achieved = len(tasks) / (time.perf_counter() - start_at)
    ordered = sorted(latencies)
    p99 = ordered[min(int(len(ordered) * 0.99), len(ordered) - 1)]
    return BenchResult("profile read p99 via gateway GET /v1/customers", p99, "ms",
                       f"paced {rate:.0f} req/s (achieved {achieved:.0f}), p50 {statistics.median(ordered):.2f} ms, "
                       f"one-at-a-time p50 {sequential:.2f} ms, "
                       f"n={len(ordered)}, {failures} non-200")


def gateway_stack_bench(seconds: float = 10.0) -> list[BenchResult]:
    """Starts the whole suite (retain_cli.stack.Stack) on RETAIN_DATABASE_URL with a fresh schema per service,
    then measures ingestion and reads through the gateway."""
    import shutil
    import subprocess
    import sys

    from retain_cli.stack import GRPC_SERVICES, Stack, pick_ports

    db_url = os.environ.get("RETAIN_DATABASE_URL", "")
    var_dir = Path(tempfile.mkdtemp(prefix="retain-profile-bench-"))
    # Batches of 500 can queue behind each other's customer row locks on a loaded machine: allow for it.
    env = {"RETAIN_VAR_DIR": str(var_dir), "RETAIN_GATEWAY_RATE_LIMIT": "0",
           "RETAIN_GATEWAY_RPC_TIMEOUT_SECONDS": "10"}
    schemas = []
    if db_url.startswith("postgres"):
        run = uuid.uuid4().hex[:8]
        for name in (*GRPC_SERVICES, "gateway"):
            env[f"RETAIN_{name.upper()}_DATABASE_SCHEMA"] = schema = f"bench_{run}_{name}"
            schemas.append(schema)
    stack = Stack(var_dir=var_dir, ports=pick_ports(fixed=False), extra_env=env, log_dir=var_dir / "logs")
    try:
        stack.start(timeout=180)
        out = subprocess.run(
            [sys.executable, "-m", "retain_cli.main", "keys", "create", "--workspace", "ws_bench", "--roles",
             "admin", "--var-dir", str(var_dir)], env=stack.env(), check=True, capture_output=True, text=True,
        ).stdout
        key = next(w for line in out.splitlines() if "API key:" in line for w in line.split()[2:3])

        async def measure() -> list[BenchResult]:
            # Reads first: the ingest run leaves the decision worker a stream backlog it works through for a
            # while, which would otherwise compete with the reads for the same cores.
            refs = await _known_customers(stack.gateway_url, key)
            await asyncio.sleep(3)
            read = await gateway_read_latency(stack.gateway_url, key, refs)
            ingest = await gateway_batch_rate(stack.gateway_url, key, seconds)
            return [read, ingest]

        return asyncio.run(measure())
    finally:
        stack.stop()
        if schemas:
            asyncio.run(drop_schemas(db_url, schemas))
        shutil.rmtree(var_dir, ignore_errors=True)


async def _known_customers(gateway_url: str, api_key: str, count: int = 2_000) -> list[str]:
    """User ids of customers the ingest run created (its first messages each created one)."""
    import aiohttp

    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    run = uuid.uuid4().hex[:8]
    async with aiohttp.ClientSession(gateway_url, headers=headers) as session:
        for start in range(0, count, 500):
            body = {"batch": segment_batch(start, 500, customers=count, run=run)}
            async with session.post("/v1/batch", json=body) as resp:
                resp.raise_for_status()
    return [f"{run}-user-{i}" for i in range(count)]


async def main() -> None:
    for result in (await ingest_rate(), await read_latency()):
        load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
        print(f"{result.name:40s} {result.value:10.1f} {result.unit:9s} {result.detail}, load {load}")  # noqa: T201


if __name__ == "__main__":
    import sys

    if "--gateway" in sys.argv:
        for result in gateway_stack_bench():
            load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
            print(f"{result.name:48s} {result.value:10.1f} {result.unit:9s} {result.detail}, load {load}")  # noqa: T201
    else:
        asyncio.run(main())
