"""Bench: journey events processed per second by the worker (in-process, real Redis + SQLite).

Half the events start a cart-abandonment style journey (instance, step log, durable timer), the
other half are the goal event that converts and ends it; each is read from the stream with the
consumer group, handled and acknowledged, exactly as in production.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

from retain_kit import migrations
from retain_kit.config import Endpoints
from retain_kit.protoconv import utcnow
from retain_kit.testing import free_port

from retain_decision.domain import journeys as jd
from retain_decision.journeys_repository import JourneyRepository
from retain_decision.worker import WorkerSettings, build_worker

SERVICE_DIR = Path(__file__).resolve().parents[2]
BENCH_JOURNEY = {
    "journey_id": "bench_cart", "name": "Bench cart",
    "trigger": {"kind": "event", "event": "Checkout Started"},
    "goal": {"event": "Order Completed"}, "entry": {"reentry": "after_exit"},
    "steps": [{"step_id": "wait_order", "kind": "wait_event", "event": "Order Completed", "timeout_hours": 4,
               "on_event": "exit"}],
}


async def journey_events_per_second(redis_url: str = "", *, events: int = 2000) -> float:
    """Events handled per second; `redis_url` defaults to REDIS_URL."""
    redis_url = redis_url or os.environ.get("REDIS_URL", "")
    if not redis_url:
        raise SystemExit("the journey bench needs REDIS_URL")
    with tempfile.TemporaryDirectory(prefix="retain-journey-bench-") as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'decision.db'}"
        await asyncio.to_thread(migrations.upgrade, SERVICE_DIR, url, schema=None)
        ws = f"ws_bench{uuid.uuid4().hex[:8]}"
        settings = WorkerSettings(
            database_url=url, redis_url=redis_url, journey_stream_pattern=f"retain:{ws}:events",
            journey_consumer="bench", journey_batch=200, journey_block_ms=50, config_cache_seconds=60.0,
        )
        # Nothing here calls another service: the bench journey needs no facts and sends nothing.
        dead = f"127.0.0.1:{free_port()}"
        endpoints = Endpoints(profile_addr=dead, scoring_addr=dead, channels_addr=dead, audit_addr=dead)
        worker, close = await build_worker(settings, endpoints)
        stream = f"retain:{ws}:events"
        try:
            async with worker.engine.sessions() as session:
                await JourneyRepository(session).save(ws, jd.validate(jd.from_dict(BENCH_JOURNEY)),
                                                      actor="bench", now=utcnow())
                await session.commit()
            now = utcnow().isoformat()
            async with worker.redis.pipeline(transaction=False) as pipe:
                for i in range(events):
                    customer = f"cus_{i // 2:032x}"
                    pipe.xadd(stream, {
                        "message_id": f"bench-{i}", "customer_id": customer,
                        "event": "Checkout Started" if i % 2 == 0 else "Order Completed", "type": "track",
                        "timestamp": now, "properties": json.dumps({"total": i}),
                    })
                await pipe.execute()
            await worker.discover()
            started = time.perf_counter()
            while worker.processed < events:
                await worker.consume_once()
            elapsed = time.perf_counter() - started
        finally:
            await worker.redis.delete(stream)
            await close()
    return events / elapsed


if __name__ == "__main__":
    print(f"journey events/s: {asyncio.run(journey_events_per_second()):.0f}")  # noqa: T201
