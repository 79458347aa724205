"""The journey worker: `python -m retain_decision worker`.

Consumes the profile's `retain:{workspace_id}:events` streams (found by SCAN, re-scanned
periodically) with a consumer group, acknowledging an entry only once its journey changes are
committed (at-least-once delivery; handling is idempotent per journey, customer and message id).
Alongside it fires due timers and carries out the outbox effects through the decision pipeline.
Several workers may run at once: they share the group, timers and effects are leased.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import grpc
import redis.asyncio as aioredis
from pydantic_settings import SettingsConfigDict
from redis.exceptions import RedisError, ResponseError
from retain.audit.v1 import audit_pb2_grpc
from retain.channels.v1 import channels_pb2_grpc
from retain.profile.v1 import profile_pb2, profile_pb2_grpc
from retain.scoring.v1 import scoring_pb2_grpc
from retain_kit import redis_client, telemetry
from retain_kit.config import Endpoints
from retain_kit.db import create_engine, session_factory
from retain_kit.errors import RetainError
from retain_kit.grpcserver import channel
from retain_kit.protoconv import to_struct, utcnow

from retain_decision.app import default_policy, limits
from retain_decision.clients import GrpcAuditSink, GrpcDispatcher, GrpcProfileReader, GrpcScorer, rpc_error
from retain_decision.config import Settings
from retain_decision.counters import RedisCounterStore
from retain_decision.journeys_repository import aware
from retain_decision.journeys_service import EngineLimits, JourneyEngine, StreamEvent
from retain_decision.service import Catalogue, Decisions, Policies

log = logging.getLogger(__name__)
STREAM_PREFIX, STREAM_SUFFIX = "retain:", ":events"


class WorkerSettings(Settings):
    model_config = SettingsConfigDict(env_prefix="RETAIN_DECISION_", extra="ignore")

    # Which streams to consume (SCAN MATCH pattern), and how often to look for new ones.
    journey_stream_pattern: str = "retain:*:events"
    journey_discover_seconds: float = 5.0
    journey_group: str = "journeys"
    # Stable across restarts on one host, so a restarted worker picks up its own unacknowledged entries.
    journey_consumer: str = ""
    journey_block_ms: int = 500
    journey_batch: int = 500
    # How often due timers and pending effects are looked for.
    journey_poll_seconds: float = 0.5
    journey_lease_seconds: float = 30.0
    # Entries another consumer left unacknowledged this long are taken over (that worker died).
    journey_claim_idle_ms: int = 60_000


class GrpcTraitWriter:
    """update_trait through ProfileService.Identify, under the customer's own user (or anonymous) id."""

    def __init__(self, stub: profile_pb2_grpc.ProfileServiceAsyncStub, *, timeout: float) -> None:
        self.stub = stub
        self.timeout = timeout

    async def update_traits(
        self, workspace_id: str, customer_id: str, traits: Mapping[str, Any], *, message_id: str
    ) -> None:
        try:
            found = await self.stub.GetProfile(
                profile_pb2.GetProfileRequest(workspace_id=workspace_id, customer_id=customer_id),
                timeout=self.timeout,
            )
            ids = {profile_pb2.IdentifierKind.Name(i.kind): i.value for i in found.profile.identifiers}
            user = ids.get("IDENTIFIER_KIND_USER_ID", "")
            await self.stub.Identify(
                profile_pb2.IdentifyRequest(
                    workspace_id=workspace_id,
                    user_id=user,
                    anonymous_id="" if user else ids.get("IDENTIFIER_KIND_ANONYMOUS_ID", ""),
                    traits=to_struct(dict(traits)),
                    message_id=message_id,
                ),
                timeout=self.timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise rpc_error(exc, service="profile") from exc


def parse_entry(workspace_id: str, fields: Mapping[str, str], *, properties: bool = True) -> StreamEvent:
    """A stream entry as written by retain_profile.publisher (properties as a JSON object). Without
    `properties`, the properties are left undecoded (empty): enough to triage the event."""
    stamp = aware(datetime.fromisoformat(fields["timestamp"]))
    assert stamp is not None
    decoded = json.loads(fields.get("properties") or "{}") if properties else {}
    return StreamEvent(
        workspace_id=workspace_id, message_id=fields["message_id"], customer_id=fields.get("customer_id", ""),
        event=fields.get("event", ""), type=fields.get("type", ""), timestamp=stamp,
        properties=decoded if isinstance(decoded, dict) else {},
    )


def workspace_of(stream: str) -> str:
    return stream[len(STREAM_PREFIX):-len(STREAM_SUFFIX)]


@dataclass
class Worker:
    engine: JourneyEngine
    redis: aioredis.Redis
    settings: WorkerSettings

    def __post_init__(self) -> None:
        self.consumer = self.settings.journey_consumer or socket.gethostname()
        self.streams: set[str] = set()
        # Own entries delivered but never acknowledged (a crash, a failed handling) are read first.
        self._backlog = True
        self.processed = 0

    async def discover(self) -> None:
        async for key in self.redis.scan_iter(match=self.settings.journey_stream_pattern, _type="STREAM"):
            if key in self.streams or not (key.startswith(STREAM_PREFIX) and key.endswith(STREAM_SUFFIX)):
                continue
            try:
                # From the start of what the stream still holds: events published before the worker
                # first looked are handled too (stale ones do not start journeys, see Entry).
                await self.redis.xgroup_create(key, self.settings.journey_group, id="0")
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self.streams.add(key)

    async def consume_once(self) -> int:
        """Read and handle one batch; returns how many entries were acknowledged."""
        if not self.streams:
            return 0
        backlog = self._backlog
        start = "0" if backlog else ">"
        response: Any = await self.redis.xreadgroup(
            self.settings.journey_group, self.consumer, dict.fromkeys(sorted(self.streams), start),
            count=self.settings.journey_batch, block=None if backlog else self.settings.journey_block_ms,
        )
        if backlog and not any(batch[1] for batch in response or ()):
            self._backlog = False
        return await self._handle(response or [])

    async def claim_stale(self) -> int:
        """Take over entries a dead consumer left unacknowledged."""
        handled = 0
        for stream in sorted(self.streams):
            result = await self.redis.xautoclaim(
                stream, self.settings.journey_group, self.consumer, self.settings.journey_claim_idle_ms,
                start_id="0-0", count=self.settings.journey_batch,
            )
            entries: list[Any] = list(result[1]) if result else []
            if entries:
                handled += await self._handle([(stream, entries)])
        return handled

    async def _handle(self, response: Any) -> int:
        acked = 0
        try:
            for stream, entries in response:
                done, complete = await self._handle_stream(stream, entries)
                acked += done
                if not complete:
                    self._backlog = True  # read again from the backlog on a later pass
                    break
        except Exception:
            self._backlog = True
            raise
        return acked

    async def _handle_stream(self, stream: str, entries: Any) -> tuple[int, bool]:
        """Handles one stream's entries in order; returns (acknowledged, whether all were handled).
        Events that can neither start nor move a journey (most of them) are acknowledged without work of
        their own; a customer whose event moved a journey has the rest of the batch looked at in full."""
        workspace_id = workspace_of(stream)
        done: list[Any] = []
        parsed: list[tuple[Any, StreamEvent, Mapping[str, str]]] = []
        for entry_id, fields in entries:
            if fields is None:  # trimmed away while pending: nothing left to handle
                done.append(entry_id)
                continue
            try:
                parsed.append((entry_id, parse_entry(workspace_id, fields, properties=False), fields))
            except (KeyError, ValueError) as exc:
                log.warning("malformed event %s on %s dropped: %s", entry_id, stream, exc)
                done.append(entry_id)
        complete = True
        handled = 0
        try:
            relevant = await self.engine.triage(workspace_id, [event for _, event, _ in parsed]) if parsed else []
            moved: set[str] = set()
            for (entry_id, head, fields), look in zip(parsed, relevant, strict=True):
                if look or head.customer_id in moved:
                    try:
                        event = parse_entry(workspace_id, fields)
                    except ValueError as exc:  # properties that are not JSON: nothing a retry could fix
                        log.warning("malformed event %s on %s dropped: %s", entry_id, stream, exc)
                        done.append(entry_id)
                        handled += 1
                        continue
                    try:
                        if await self.engine.handle_event(event):
                            moved.add(event.customer_id)
                    except (RetainError, OSError) as exc:
                        log.warning("event %s not handled yet: %s", event.message_id, exc)
                        complete = False
                        break
                done.append(entry_id)
                handled += 1
        finally:
            if done:
                await self.redis.xack(stream, self.settings.journey_group, *done)
            self.processed += handled
        return handled, complete

    async def run(self, stop: asyncio.Event) -> None:
        async def every(seconds: float, step: Callable[[], Awaitable[Any]], what: str) -> None:
            while not stop.is_set():
                try:
                    await step()
                except asyncio.CancelledError:
                    raise
                except Exception:  # a loop must outlive a bad pass (database or Redis blip)
                    log.exception("journey worker: %s failed", what)
                    await asyncio.sleep(1.0)
                    continue
                if seconds:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), seconds)

        async def consume() -> None:
            if not self.streams:
                await asyncio.sleep(self.settings.journey_block_ms / 1000)
                return
            try:
                await self.consume_once()
            except RedisError:
                log.warning("journey worker: Redis unavailable")
                await asyncio.sleep(1.0)

        poll = self.settings.journey_poll_seconds
        tasks = [
            asyncio.create_task(every(self.settings.journey_discover_seconds, self.discover, "discovery")),
            asyncio.create_task(every(0, consume, "consuming events")),
            asyncio.create_task(every(poll, self.engine.fire_due_timers, "firing timers")),
            asyncio.create_task(every(poll, self.engine.run_effects, "carrying out effects")),
            asyncio.create_task(every(self.settings.journey_claim_idle_ms / 2000, self.claim_stale, "claiming")),
        ]
        await stop.wait()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def build_worker(
    settings: WorkerSettings, endpoints: Endpoints | None = None, *, clock: Callable[[], datetime] = utcnow
) -> tuple[Worker, Callable[[], Awaitable[None]]]:
    """The same catalogue, policies and pipeline as the decision server, wired to a worker."""
    if not settings.redis_url:
        raise SystemExit("the journey worker needs REDIS_URL (event streams and cap counters)")
    endpoints = endpoints or Endpoints()
    engine = create_engine(settings.database_url, schema=settings.schema)
    sessions = session_factory(engine)
    timeout = settings.rpc_timeout_seconds
    channels = {name: channel(getattr(endpoints, f"{name}_addr"))
                for name in ("profile", "scoring", "channels", "audit")}
    redis = redis_client.connect(settings.redis_url)
    counters = RedisCounterStore(redis_client.connect(settings.redis_url))
    audit = GrpcAuditSink(audit_pb2_grpc.AuditServiceStub(channels["audit"]), timeout=timeout)
    profiles = GrpcProfileReader(profile_pb2_grpc.ProfileServiceStub(channels["profile"]), timeout=timeout)
    scorer = GrpcScorer(scoring_pb2_grpc.ScoringServiceStub(channels["scoring"]), timeout=timeout)
    catalogue = Catalogue(sessions, audit, seed_demo=settings.seed_demo_catalogue, clock=clock,
                          cache_seconds=settings.config_cache_seconds)
    policies = Policies(sessions, audit, defaults=default_policy(settings), clock=clock,
                        cache_seconds=settings.config_cache_seconds)
    decisions = Decisions(
        catalogue, policies=policies, profiles=profiles, scorer=scorer,
        dispatcher=GrpcDispatcher(channels_pb2_grpc.ChannelServiceStub(channels["channels"]), timeout=timeout),
        audit=audit, counters=counters, sessions=sessions, limits=limits(settings), clock=clock,
    )
    journey_engine = JourneyEngine(
        sessions, decisions=decisions, catalogue=catalogue, policies=policies, profiles=profiles, scorer=scorer,
        traits=GrpcTraitWriter(profile_pb2_grpc.ProfileServiceStub(channels["profile"]), timeout=timeout),
        limits=EngineLimits(batch=settings.journey_batch, lease_seconds=settings.journey_lease_seconds,
                            cache_seconds=settings.config_cache_seconds),
        clock=clock,
    )

    async def close() -> None:
        await counters.close()
        await redis.aclose()
        for ch in channels.values():
            await ch.close()
        await engine.dispose()

    return Worker(journey_engine, redis, settings), close


def main() -> None:
    settings = WorkerSettings()
    telemetry.setup(f"{settings.service_name}-worker", log_level=settings.log_level)

    async def run() -> None:
        worker, close = await build_worker(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("journey worker %s consuming %s", worker.consumer, settings.journey_stream_pattern)
        try:
            await worker.run(stop)
        finally:
            await close()

    asyncio.run(run())
