"""Benchmark for `make bench`: messages dispatched per second end to end, and dispatch-to-provider time.

A real audit server and the channels server (each built by its own `app.build`, outbox worker included)
run in this process on loopback gRPC ports, channels with the `log` provider on every channel. Each
message goes Dispatch -> message + outbox commit -> `queued` audited -> provider call -> outcome stored ->
`sent` audited. Afterwards the log provider's JSONL file and sent_log table are checked for duplicates
(every idempotency key must appear exactly once) and a share of the keys is dispatched again, which must
come back `duplicate` without a new send.

Databases are fresh: throwaway PostgreSQL schemas when RETAIN_DATABASE_URL is set, else SQLite files in a
temporary directory. `python -m retain_channels.bench [messages] [concurrency]` prints the numbers.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
from retain.channels.v1 import channels_pb2, channels_pb2_grpc
from retain.common.v1 import common_pb2
from retain_kit import migrations
from retain_kit.config import Endpoints, async_database_url
from retain_kit.db import create_engine, drop_schemas, session_factory
from retain_kit.grpcserver import start
from retain_kit.protoconv import to_struct

from retain_channels.app import build
from retain_channels.config import Settings
from retain_channels.repository import ChannelRepository

SERVICE_DIR = Path(__file__).resolve().parents[2]
AUDIT_DIR = SERVICE_DIR.parent / "audit"
WORKSPACE = "ws_bench"
CHANNEL_MIX = (
    (common_pb2.CHANNEL_EMAIL, "somchai{}@example.co.th"),
    (common_pb2.CHANNEL_SMS, "+6681{:07d}"),
    (common_pb2.CHANNEL_LINE, "U{:032x}"),
    (common_pb2.CHANNEL_PUSH, "https://push.example.com/sub/{}"),
)


@dataclass(frozen=True)
class DispatchBench:
    messages: int
    concurrency: int
    database: str
    seconds: float
    messages_per_second: float
    # Dispatch request -> first provider call, as stored on each message.
    decision_to_provider_p50_ms: float
    decision_to_provider_p99_ms: float
    # Whole Dispatch RPC as the caller sees it (store, audit twice, provider).
    dispatch_rpc_p50_ms: float
    dispatch_rpc_p99_ms: float
    # Provider sends beyond one per idempotency key (JSONL lines and sent_log rows); must be 0.
    duplicates: int
    redispatched: int
    redispatch_resends: int

    def rows(self) -> list[tuple[str, float, str, str]]:
        cond = (f"{self.messages} messages over 4 channels, {self.concurrency} concurrent, log provider, "
                f"real audit server, {self.database}, {self.duplicates} duplicates")
        return [
            ("messages_dispatched_per_second", self.messages_per_second, "msg/s", cond),
            ("decision_to_provider_p50", self.decision_to_provider_p50_ms, "ms", cond),
            ("decision_to_provider_p99", self.decision_to_provider_p99_ms, "ms", cond),
        ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] if ordered else 0.0


@asynccontextmanager
async def _databases(database_url: str, tmp: Path) -> AsyncIterator[Callable[[str], tuple[str, str | None]]]:
    """Hands out a fresh (url, schema) per service and drops the PostgreSQL schemas afterwards."""
    url = database_url or os.environ.get("RETAIN_DATABASE_URL", "")
    schemas: list[str] = []

    def fresh(service: str) -> tuple[str, str | None]:
        if url.startswith("postgres"):
            schema = f"bench_{service}_{uuid.uuid4().hex[:8]}"
            schemas.append(schema)
            return async_database_url(url), schema
        return f"sqlite+aiosqlite:///{tmp}/{service}-bench.db", None

    try:
        yield fresh
    finally:
        await drop_schemas(url, schemas)


def _message(i: int, run: str) -> channels_pb2.Message:
    channel, address = CHANNEL_MIX[i % len(CHANNEL_MIX)]
    return channels_pb2.Message(
        idempotency_key=f"bench-{run}-{i}",
        customer_id=f"cus_bench_{i % 500:03d}",
        channel=channel,
        recipient=address.format(i),
        decision_id=f"dec_bench_{i}",
        offer_id="off_save10",
        purpose="marketing",
        locale="th",
        subject="ข้อเสนอพิเศษสำหรับคุณ",
        body="สวัสดีค่ะ คุณ{{ name }} รับส่วนลด {{ discount }}% วันนี้",
        variables=to_struct({"name": "สมชาย", "discount": 10}),
    )


async def dispatch_rate(
    *, messages: int = 2000, concurrency: int = 16, redispatch_share: float = 0.1, database_url: str = ""
) -> DispatchBench:
    from retain_audit import app as audit_app
    from retain_audit.config import Settings as AuditSettings

    run = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        async with AsyncExitStack() as stack:
            fresh = await stack.enter_async_context(_databases(database_url, tmp))
            audit_url, audit_schema = fresh("audit")
            channels_url, channels_schema = fresh("channels")
            await asyncio.to_thread(migrations.upgrade, AUDIT_DIR, audit_url, schema=audit_schema)
            await asyncio.to_thread(migrations.upgrade, SERVICE_DIR, channels_url, schema=channels_schema)

            audit_settings = AuditSettings(
                database_url=audit_url, database_schema=audit_schema or "",
                signing_key_path=str(tmp / "audit-signing.key"), master_key_path=str(tmp / "audit-master.key"),
            )
            audit_regs, audit_stop = await audit_app.build(audit_settings)
            audit_server, audit_port, _ = await start(audit_regs, port=0)
            stack.push_async_callback(audit_stop)
            stack.push_async_callback(audit_server.stop, None)

            settings = Settings(
                database_url=channels_url, database_schema=channels_schema or "", var_dir=tmp / "var",
                rpc_timeout_seconds=10.0,
            )
            regs, channels_stop = await build(settings, endpoints=Endpoints(audit_addr=f"127.0.0.1:{audit_port}"))
            server, port, _ = await start(regs, port=0)
            stack.push_async_callback(channels_stop)
            stack.push_async_callback(server.stop, None)
            client = await stack.enter_async_context(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
            stub = channels_pb2_grpc.ChannelServiceStub(client)

            async def send(i: int, prefix: str = run) -> channels_pb2.DispatchResponse:
                response: channels_pb2.DispatchResponse = await stub.Dispatch(
                    channels_pb2.DispatchRequest(workspace_id=WORKSPACE, message=_message(i, prefix)), timeout=30
                )
                return response

            for i in range(20):  # warm-up: pools, first statements
                await send(i, prefix=f"warmup-{run}")

            rpc_latencies: list[float] = []
            provider_latencies: list[float] = []
            counter = iter(range(messages))

            async def worker() -> None:
                for i in counter:
                    began = time.perf_counter()
                    response = await send(i)
                    rpc_latencies.append((time.perf_counter() - began) * 1000)
                    if response.duplicate or response.message.status != common_pb2.DELIVERY_STATUS_SENT:
                        raise RuntimeError(f"message {i} not sent: {response}")
                    provider_latencies.append(response.message.dispatch_to_provider_ms)

            began = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            seconds = time.perf_counter() - began

            again = list(range(0, messages, max(int(1 / redispatch_share), 1))) if redispatch_share > 0 else []
            replies = await asyncio.gather(*(send(i) for i in again))
            resends = sum(not r.duplicate for r in replies)

            lines = (settings.var_dir / "channels-outbox.jsonl").read_text(encoding="utf-8").splitlines()
            ours = f"bench-{run}-"
            per_key = Counter(k for k in (json.loads(line)["idempotency_key"] for line in lines) if k.startswith(ours))
            engine = create_engine(channels_url, schema=channels_schema)
            async with session_factory(engine)() as session:
                rows = await ChannelRepository(session).sent_log(WORKSPACE)
            await engine.dispose()
            per_row = Counter(r.idempotency_key for r in rows if r.idempotency_key.startswith(ours))
            missing = messages - len(per_key)
            if missing or len(per_row) != messages:
                raise RuntimeError(f"{missing} messages missing from the log provider")
            duplicates = sum(n - 1 for n in per_key.values()) + sum(n - 1 for n in per_row.values())

    return DispatchBench(
        messages=messages,
        concurrency=concurrency,
        database="postgresql" if channels_schema else "sqlite",
        seconds=seconds,
        messages_per_second=messages / seconds,
        decision_to_provider_p50_ms=statistics.median(provider_latencies),
        decision_to_provider_p99_ms=percentile(provider_latencies, 0.99),
        dispatch_rpc_p50_ms=statistics.median(rpc_latencies),
        dispatch_rpc_p99_ms=percentile(rpc_latencies, 0.99),
        duplicates=duplicates,
        redispatched=len(again),
        redispatch_resends=resends,
    )


def run(messages: int = 2000, concurrency: int = 16, **kwargs: Any) -> DispatchBench:
    return asyncio.run(dispatch_rate(messages=messages, concurrency=concurrency, **kwargs))


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    result = run(int(args[0]) if args else 2000, int(args[1]) if len(args) > 1 else 16)
    sys.stdout.write(json.dumps(asdict(result), indent=2) + "\n")


if __name__ == "__main__":
    main()
