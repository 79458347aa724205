"""Audit benchmarks: append rate (single and batched through gRPC) and verification rate over N records.

`python -m retain_audit.bench [N]` prints the numbers; `make bench` calls `run()` and prints the rows.
The chain is built in a throwaway SQLite database (the embedded default) unless `database_url` is given.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from retain.audit.v1 import audit_pb2, audit_pb2_grpc
from retain.common.v1 import common_pb2
from retain_kit import migrations
from retain_kit.config import async_database_url
from retain_kit.db import create_engine, drop_schemas, session_factory
from retain_kit.grpcserver import Registration, start
from retain_kit.protoconv import to_struct

from retain_audit.app import SERVICE_NAME
from retain_audit.domain.checkpoint import Signer
from retain_audit.domain.privacy import Vault
from retain_audit.server import AuditServicer
from retain_audit.service import AuditLog

SERVICE_DIR = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class AuditBench:
    records: int
    batch_size: int
    append_batched_per_s: float
    single_records: int
    append_single_per_s: float
    append_concurrent_per_s: float
    verify_per_s: float
    verify_seconds: float
    verified_ok: bool


def _record(i: int) -> audit_pb2.RecordInput:
    """A realistic message record: one personal field (sealed with the customer's key) per record."""
    return audit_pb2.RecordInput(
        kind=audit_pb2.RECORD_KIND_MESSAGE,
        customer_id=f"cus_{i % 5000:032x}",
        message_id=f"msg_{i:016x}",
        channel=common_pb2.CHANNEL_SMS,
        offer_id="winback_10",
        outcome="sent",
        actor="channels",
        payload=to_struct({"recipient": f"+6681{i % 10_000_000:07d}", "provider": "twilio", "attempt": 1}),
    )


async def measure(
    n: int, *, batch_size: int = 1000, single: int = 2000, database_url: str = "", checkpoint_every: int = 10_000
) -> AuditBench:
    with tempfile.TemporaryDirectory(prefix="retain-audit-bench-") as tmp:
        url = async_database_url(database_url) if database_url else f"sqlite+aiosqlite:///{tmp}/audit.db"
        schema = f"bench_audit_{os.getpid()}" if url.startswith("postgresql") else None
        await asyncio.to_thread(migrations.upgrade, SERVICE_DIR, url, schema=schema)
        engine = create_engine(url, schema=schema)
        log = AuditLog(
            session_factory(engine), signer=Signer(Ed25519PrivateKey.generate()), vault=Vault(os.urandom(32)),
            checkpoint_every=checkpoint_every,
        )
        server, port, _ = await start(
            [Registration(AuditServicer(log), audit_pb2_grpc.add_AuditServiceServicer_to_server, SERVICE_NAME)]
        )
        options = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
                stub = audit_pb2_grpc.AuditServiceStub(channel)
                t0 = time.perf_counter()
                for startat in range(0, n, batch_size):
                    records = [_record(i) for i in range(startat, min(n, startat + batch_size))]
                    await stub.AppendBatch(audit_pb2.AppendBatchRequest(workspace_id="ws_bench", records=records))
                batched = n / (time.perf_counter() - t0)

                t0 = time.perf_counter()
                for i in range(single):
                    await stub.Append(audit_pb2.AppendRequest(workspace_id="ws_single", record=_record(i)))
                singles = single / (time.perf_counter() - t0) if single else 0.0

                # Many writers at once (decisions from concurrent requests): group commit shares transactions.
                t0 = time.perf_counter()
                pending = iter(range(single))

                async def writer() -> None:
                    for i in pending:
                        await stub.Append(audit_pb2.AppendRequest(workspace_id="ws_concurrent", record=_record(i)))

                await asyncio.gather(*(writer() for _ in range(32)))
                concurrent = single / (time.perf_counter() - t0) if single else 0.0

                t0 = time.perf_counter()
                result = await stub.Verify(audit_pb2.VerifyRequest(workspace_id="ws_bench"), timeout=3600)
                verify_s = time.perf_counter() - t0
        finally:
            await server.stop(None)
            await engine.dispose()
            if schema:
                await drop_schemas(url, [schema])
    return AuditBench(
        records=n,
        batch_size=batch_size,
        append_batched_per_s=batched,
        single_records=single,
        append_single_per_s=singles,
        append_concurrent_per_s=concurrent,
        verify_per_s=result.records_checked / verify_s if verify_s else 0.0,
        verify_seconds=verify_s,
        verified_ok=result.ok and result.records_checked == n,
    )


def run(n: int = 1_000_000, **kwargs: object) -> AuditBench:
    return asyncio.run(measure(n, **kwargs))  # type: ignore[arg-type]


if __name__ == "__main__":
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    print(run(size, database_url=os.environ.get("RETAIN_AUDIT_BENCH_DATABASE_URL", "")))  # noqa: T201
