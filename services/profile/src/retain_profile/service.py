"""Profile use cases: ingest and resolve identities, read profiles and features, manage consent."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from retain_kit.db import statement_engine
from retain_kit.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from retain_kit.expressions import ExpressionError
from retain_kit.protoconv import aware, utcnow
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from retain_profile.domain import consent as consent_rules
from retain_profile.domain import segments as segment_rules
from retain_profile.domain.consent import ConsentAnswer, ConsentRecord
from retain_profile.domain.events import IncomingEvent, Rejection, ValidEvent, validate
from retain_profile.domain.features import (
    DEFAULT_THRESHOLDS,
    EventFact,
    Features,
    LifecycleThresholds,
    Summary,
    features_at,
    lifecycle_stage,
    summarize,
)
from retain_profile.domain.identity import (
    CUSTOMER_PREFIX,
    LOOKUP_ORDER,
    CustomerRef,
    Identifier,
    choose_survivor,
    combine_traits,
    lookup_candidates,
    merge_traits,
    normalise,
)
from retain_profile.domain.privacy import scrub_properties
from retain_profile.domain.segments import SegmentDefinition
from retain_profile.models import (
    ConsentHistoryRow,
    CustomerRow,
    ErasureRow,
    EventRow,
    MergeRow,
    SegmentRow,
    WorkspaceSettingsRow,
)
from retain_profile.ports import AuditSink, ConsentAuditEntry, EventPublisher, StreamEvent, properties_json
from retain_profile.repository import ProfileRepository, consent_record, profile_rows
from retain_profile.scores_repository import StoredScore

log = logging.getLogger(__name__)

MAX_BATCH = 1000
DEFAULT_PAGE = 50
MAX_PAGE = 500
WRITE_ATTEMPTS = 4
ANALYZE_FIRST_AT = 2_000
# Settings and segment definitions are cached per replica this long; changes made through this replica
# apply at once, changes made through another one within this many seconds.
CONFIG_TTL_SECONDS = 2.0
# Feature summaries kept decoded per replica (see Profiles._summaries).
SUMMARY_CACHE_SIZE = 20_000


@dataclass(frozen=True)
class ItemResult:
    index: int
    message_id: str
    status: str  # accepted | duplicate | rejected
    customer_id: str = ""
    field: str = ""
    error: str = ""
    merged: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProfileView:
    customer_id: str
    workspace_id: str
    identifiers: list[Identifier]
    traits: dict[str, Any]
    events_count: int
    first_seen: datetime | None
    last_seen: datetime | None
    features: Features
    consents: list[ConsentRecord]
    time_zone: str
    locale: str
    erased_at: datetime | None = None


@dataclass(frozen=True)
class SettingsView:
    lifecycle: LifecycleThresholds
    updated_at: datetime | None = None
    updated_by: str = ""


@dataclass(frozen=True)
class SegmentView:
    name: str
    expression: str
    description: str
    builtin: bool
    created_at: datetime | None = None


@dataclass(frozen=True)
class CustomerExport:
    profile: ProfileView
    events: list[EventRow]
    consent_history: list[ConsentHistoryRow]
    merged_customer_ids: list[str]


@dataclass(frozen=True)
class ErasureResult:
    customer_id: str
    erasure_id: str
    erased_at: datetime
    events_scrubbed: int
    identifiers_removed: int
    audit_shredded: bool


@dataclass(frozen=True)
class WorkspaceConfig:
    thresholds: LifecycleThresholds
    segments: tuple[SegmentDefinition, ...]
    loaded_at: float


@dataclass(frozen=True)
class ConsentChangeInput:
    channel: str
    purpose: str
    status: str
    source: str = ""
    lawful_basis: str = ""
    policy_version: str = ""
    occurred_at: datetime | None = None


@dataclass
class _Customer:
    """A customer as one ingest transaction sees it: plain values, written back in bulk at the end."""

    customer_id: str
    created_at: datetime
    traits: dict[str, Any]
    trait_times: dict[str, str]
    # Not in the database yet (created by this batch).
    new: bool = False
    # Traits changed since loaded (or since inserted).
    dirty: bool = False


@dataclass
class _Batch:
    """Bookkeeping for one ingest transaction."""

    workspace_id: str
    now: datetime
    # Facts to fold into each customer's stored summary.
    pending: dict[str, list[EventFact]] = field(default_factory=lambda: defaultdict(list))
    # Customers whose summary is rebuilt from their stored events (they absorbed a merge).
    rebuild: set[str] = field(default_factory=set)
    # loser -> survivor for merges made in this batch.
    merged: dict[str, str] = field(default_factory=dict)
    # (request index, column values) of events to insert; `id` is filled in once they are.
    stored: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    # Identifier rows not yet written (they are written in bulk, and before any merge moves identifiers).
    new_identifiers: list[dict[str, Any]] = field(default_factory=list)
    # Identifier -> owner for every identifier whose owner is known (prefetched or linked in this batch).
    owners: dict[Identifier, str] = field(default_factory=dict)
    # Identifiers looked up already: absent from `owners` means nobody owned them.
    looked_up: set[Identifier] = field(default_factory=set)
    # The outbox row standing for this batch's events until they are on the stream.
    outbox_id: int | None = None
    # Customers created by this batch (their feature rows are new too).
    created: set[str] = field(default_factory=set)
    # Customers loaded (and locked) or created in this batch.
    customers: dict[str, _Customer] = field(default_factory=dict)
    # customer -> (row version, summary) as this batch wrote them (see ProfileRepository.lock_summaries).
    summaries: dict[str, tuple[str, Summary]] = field(default_factory=dict)

    def final(self, customer_id: str) -> str:
        while customer_id in self.merged:
            customer_id = self.merged[customer_id]
        return customer_id


class Profiles:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        audit: AuditSink,
        publisher: EventPublisher,
        country_code: str = "66",
        default_time_zone: str = "Asia/Bangkok",
        default_locale: str = "th",
    ) -> None:
        self.sessions = sessions
        self.audit = audit
        self.publisher = publisher
        self.country_code = country_code
        self.default_time_zone = default_time_zone
        self.default_locale = default_locale
        # SQLite has no row locks: serialise writers per workspace in-process; PostgreSQL replicas rely on
        # row locks and unique constraints, retrying the batch when they lose a race.
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._config: dict[str, WorkspaceConfig] = {}
        # customer -> (feature row version, summary) for rows this replica wrote last: a batch touching such a
        # customer again skips decoding the stored summary while the row is unchanged (least recently used
        # entries go first).
        self._summaries: OrderedDict[str, tuple[str, Summary]] = OrderedDict()
        engine = sessions.kw.get("bind")
        # Reads are single statements: autocommit spares the BEGIN and ROLLBACK round trips.
        self._reads = (
            async_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False)
            if engine is not None else sessions
        )
        # The profile read (the hot path) goes through a plain connection of an engine configured for single
        # statements once, rather than a session switching its connection's isolation level on every read.
        self._statements = statement_engine(engine) if engine is not None else None
        self._serialise_ingest = engine is None or engine.dialect.name != "postgresql"
        # Statistics are refreshed as this process's ingest volume passes each power of ten (autovacuum may
        # be off or slow to notice a young table; stale statistics make every ingest probe a scan).
        self._ingested = 0
        self._analyze_at = ANALYZE_FIRST_AT
        self._background: set[asyncio.Task[None]] = set()

    def _ingest_lock(self, workspace_id: str) -> contextlib.AbstractAsyncContextManager[Any]:
        """SQLite has no row locks, so its writers take turns per workspace; on PostgreSQL batches run
        concurrently, serialised by customer row locks and unique constraints (the loser retries)."""
        return self._locks[workspace_id] if self._serialise_ingest else contextlib.nullcontext()

    # ingestion

    async def ingest(self, workspace_id: str, events: Sequence[IncomingEvent]) -> list[ItemResult]:
        _require_workspace(workspace_id)
        if len(events) > MAX_BATCH:
            raise InvalidArgument(f"at most {MAX_BATCH} events per batch", field="events")
        now = utcnow()
        checked = [validate(e, now=now, country_code=self.country_code) for e in events]
        async with self._ingest_lock(workspace_id):
            for attempt in range(WRITE_ATTEMPTS):
                try:
                    results, batch = await self._ingest_once(workspace_id, events, checked, now=now)
                    break
                except (IntegrityError, OperationalError, DBAPIError) as exc:
                    # Another batch stored one of these events or identifiers first (the retry sees it), or
                    # two merges locked the same customers in opposite orders (PostgreSQL broke the deadlock).
                    if not _retryable(exc):
                        raise
                    if attempt == WRITE_ATTEMPTS - 1:
                        raise Unavailable("concurrent writes kept conflicting; retry the batch") from None
                    await asyncio.sleep(0.005 * (attempt + 1))
        await self._publish(workspace_id, batch)
        self._ingested += len(batch.stored)
        if self._ingested >= self._analyze_at and not self._serialise_ingest:
            self._analyze_at = self._ingested * 10
            task = asyncio.create_task(self._analyze())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return results

    async def _analyze(self) -> None:
        try:
            async with self._reads() as session:
                await ProfileRepository(session).analyze()
        except Exception:
            log.exception("refreshing planner statistics failed")

    async def _ingest_once(
        self,
        workspace_id: str,
        events: Sequence[IncomingEvent],
        checked: Sequence[ValidEvent | Rejection],
        *,
        now: datetime,
    ) -> tuple[list[ItemResult], _Batch]:
        batch = _Batch(workspace_id, now)
        results: list[ItemResult | None] = [None] * len(events)
        async with self.sessions() as session:
            repo = ProfileRepository(session)
            valid = [(i, c) for i, c in enumerate(checked) if isinstance(c, ValidEvent)]
            known = await repo.known_message_ids(workspace_id, [c.source.message_id for _, c in valid])
            # One query for every identifier's owner and one to lock the customers whose traits may change,
            # so the loop below touches the database only for creations, merges and aliases. Customers that
            # only get events are serialised by their feature rows, locked late in the transaction, which
            # keeps concurrent batches from queueing behind each other for most of theirs.
            fresh = [c for _, c in valid if c.source.message_id not in known]
            wanted = {i for c in fresh for i in c.identifiers}
            batch.owners = await repo.owners(workspace_id, wanted)
            batch.looked_up = set(wanted)
            with_traits = {batch.owners[i] for c in fresh if c.traits for i in c.identifiers if i in batch.owners}
            await self._load_customers(repo, batch, with_traits)
            first_in_batch: dict[str, int] = {}
            merged_by: dict[int, tuple[str, ...]] = {}
            for index, item in enumerate(checked):
                message_id = events[index].message_id
                if isinstance(item, Rejection):
                    results[index] = ItemResult(index, message_id, "rejected", field=item.field, error=item.error)
                elif message_id in known:
                    results[index] = ItemResult(index, message_id, "duplicate", customer_id=known[message_id])
                elif message_id in first_in_batch:
                    continue  # resolved below, once the first copy has its customer
                else:
                    first_in_batch[message_id] = index
                    merged_by[index] = await self._store(repo, batch, index, item)
            await self._write_identifiers(repo, batch)
            await self._write_customers(repo, batch)
            for _, values in batch.stored:
                # Events stored before their customer was merged away in this batch go to the survivor.
                values["customer_id"] = batch.final(values["customer_id"])
            ids, batch.outbox_id = await repo.insert_events(
                [values for _, values in batch.stored],
                outbox=(workspace_id, now) if self.publisher.enabled else None,
            )
            for (_, values), row_id in zip(batch.stored, ids, strict=True):
                values["id"] = row_id
            await self._refresh_features(repo, batch)
            await session.commit()
        self._remember_summaries(batch)
        owner = {values["message_id"]: values["customer_id"] for _, values in batch.stored}
        for index in range(len(checked)):
            message_id = events[index].message_id
            if results[index] is not None:
                continue
            if first_in_batch.get(message_id) == index:
                results[index] = ItemResult(
                    index, message_id, "accepted", customer_id=owner[message_id], merged=merged_by.get(index, ())
                )
            else:
                results[index] = ItemResult(index, message_id, "duplicate", customer_id=owner[message_id])
        return [r for r in results if r is not None], batch

    async def _load_customers(self, repo: ProfileRepository, batch: _Batch, customer_ids: Any) -> None:
        wanted = set(customer_ids) - batch.customers.keys()
        for cid, created_at, traits, times in await repo.lock_customer_states(batch.workspace_id, wanted):
            batch.customers[cid] = _Customer(cid, created_at, dict(traits), dict(times))

    async def _write_customers(self, repo: ProfileRepository, batch: _Batch) -> None:
        """Inserts customers created so far and writes back changed traits (merges need them in place)."""
        ws, now = batch.workspace_id, batch.now
        created = [c for c in batch.customers.values() if c.new]
        await repo.insert_customers([
            {"customer_id": c.customer_id, "workspace_id": ws, "created_at": c.created_at, "updated_at": now,
             "merged_into": None, "traits": c.traits, "trait_times": c.trait_times}
            for c in created
        ])
        changed = [c for c in batch.customers.values() if c.dirty and not c.new]
        await repo.update_customer_traits([
            {"b_id": c.customer_id, "traits": c.traits, "trait_times": c.trait_times, "updated_at": now}
            for c in changed
        ])
        for c in batch.customers.values():
            c.new = c.dirty = False

    async def _store(self, repo: ProfileRepository, batch: _Batch, index: int, item: ValidEvent) -> tuple[str, ...]:
        customer, merged = await self._resolve(repo, batch, item)
        if item.traits:
            traits, times = merge_traits(customer.traits, customer.trait_times, item.traits, at=item.timestamp)
            if traits != customer.traits or times != customer.trait_times:
                customer.traits, customer.trait_times, customer.dirty = traits, times, True
        src = item.source
        values = {
            "workspace_id": batch.workspace_id,
            "message_id": src.message_id,
            "customer_id": customer.customer_id,
            "type": src.type,
            "event": src.event,
            "user_id": src.user_id,
            "anonymous_id": src.anonymous_id,
            "previous_id": src.previous_id,
            "properties": src.properties,
            # Encoded once for both the events table and the stream.
            "properties_json": properties_json(src.properties),
            "traits": src.traits,
            "context": src.context,
            "timestamp": item.timestamp,
            "received_at": batch.now,
            # Publishing is tracked per batch by the outbox row, not per event.
            "published": True,
        }
        batch.stored.append((index, values))
        batch.pending[customer.customer_id].append(
            EventFact(type=src.type, event=src.event, timestamp=item.timestamp, properties=src.properties)
        )
        return merged

    async def _resolve(
        self, repo: ProfileRepository, batch: _Batch, item: ValidEvent
    ) -> tuple[_Customer, tuple[str, ...]]:
        """The customer an event belongs to: found by any identifier, created, or the survivor of a merge."""
        ws = batch.workspace_id
        identifiers = list(item.identifiers)
        if item.source.type == "alias":
            previous = await self._lookup(repo, ws, item.source.previous_id)
            identifiers.append(previous[0] if previous else Identifier("anonymous_id", item.source.previous_id.strip()))
        unseen = [i for i in identifiers if i not in batch.looked_up]
        if unseen:
            batch.owners.update(await repo.owners(ws, unseen))
            batch.looked_up.update(unseen)
        owners = {i: batch.owners[i] for i in identifiers if i in batch.owners}
        owner_ids = sorted(set(owners.values()))
        merged: tuple[str, ...] = ()
        if not owner_ids:
            customer = _Customer(f"{CUSTOMER_PREFIX}{uuid.uuid4().hex}", batch.now, {}, {}, new=True)
            batch.customers[customer.customer_id] = customer
            batch.created.add(customer.customer_id)
        else:
            if len(owner_ids) > 1:
                await self._load_customers(repo, batch, owner_ids)
                survivor_ref = choose_survivor(
                    [CustomerRef(c, batch.customers[c].created_at) for c in owner_ids if c in batch.customers]
                )
                losers = tuple(c for c in owner_ids if c != survivor_ref.customer_id)
                reason = f"event {item.source.message_id} links " + ", ".join(
                    f"{i.kind}" for i in identifiers if i in owners
                )
                for loser in losers:
                    await self._merge(repo, batch, survivor=survivor_ref.customer_id, loser=loser, reason=reason)
                merged = losers
                owner_ids = [survivor_ref.customer_id]
            cid = owner_ids[0]
            if item.traits:
                await self._load_customers(repo, batch, [cid])
            found = batch.customers.get(cid)
            if found is None and item.traits:
                raise NotFound(f"customer {cid} vanished during ingest", field="customer_id")
            # An event without traits only needs the id; the placeholder is never written back.
            customer = found or _Customer(cid, batch.now, {}, {})
        new = [i for i in identifiers if i not in owners]
        for ident in new:
            batch.new_identifiers.append(
                {"workspace_id": ws, "kind": ident.kind, "value": ident.value,
                 "customer_id": customer.customer_id, "created_at": batch.now}
            )
            batch.owners[ident] = customer.customer_id
            batch.looked_up.add(ident)
        return customer, merged

    async def _write_identifiers(self, repo: ProfileRepository, batch: _Batch) -> None:
        await repo.insert_identifiers(batch.new_identifiers)
        batch.new_identifiers = []

    async def _merge(self, repo: ProfileRepository, batch: _Batch, *, survivor: str, loser: str, reason: str) -> None:
        ws = batch.workspace_id
        # The merge re-homes the loser's identifiers and rows in the database, so they must be there first.
        await self._write_identifiers(repo, batch)
        await self._load_customers(repo, batch, (survivor, loser))
        await self._write_customers(repo, batch)
        keep, gone = batch.customers.get(survivor), batch.customers.get(loser)
        if keep is None or gone is None:
            raise NotFound("customer vanished during merge", field="customer_id")
        keep.traits, keep.trait_times = combine_traits(
            (keep.traits, keep.trait_times), (gone.traits, gone.trait_times)
        )
        keep.dirty = True
        states = consent_rules.merge_states(
            [consent_record(r) for r in await repo.consents(ws, survivor)],
            [consent_record(r) for r in await repo.consents(ws, loser)],
        )
        await repo.drop_consents(ws, loser)
        await repo.replace_consents(ws, survivor, states)
        await repo.session.flush()
        await repo.move_customer(ws, loser=loser, survivor=survivor, reason=reason, now=batch.now)
        log.info("merged customer %s into %s (%s)", loser, survivor, reason)
        batch.merged[loser] = survivor
        batch.customers.pop(loser, None)
        for ident, owner in batch.owners.items():
            if owner == loser:
                batch.owners[ident] = survivor
        batch.pending.pop(loser, None)
        batch.rebuild.discard(loser)
        batch.rebuild.add(survivor)

    async def _refresh_features(self, repo: ProfileRepository, batch: _Batch) -> None:
        ws = batch.workspace_id
        config = await self._workspace_config(repo, ws)
        touched = sorted(set(batch.pending) | batch.rebuild)
        # Created by this batch: nothing stored to read (or lock).
        existing = [c for c in touched if c not in batch.created]
        # Summaries this replica wrote last are taken out of the cache while this batch folds into them (a
        # concurrent batch reads them from the database instead); they go back once the batch commits.
        cached = {c: entry for c in existing if (entry := self._summaries.pop(c, None)) is not None}
        stored = await repo.lock_summaries(ws, existing, known={c: version for c, (version, _) in cached.items()})
        rows: list[dict[str, Any]] = []
        summaries: dict[str, Summary] = {}
        as_of = batch.now.isoformat()
        for customer_id in touched:
            if customer_id in batch.rebuild:
                summary = summarize(await repo.facts(ws, customer_id))
            else:
                version, data = stored.get(customer_id, ("", {}))
                if data is None:
                    summary = cached[customer_id][1]  # unchanged since this replica wrote it
                else:
                    summary = Summary.from_json(data)
                for fact in batch.pending[customer_id]:
                    summary.add(fact)
            summaries[customer_id] = summary
            # Only the stage is needed at write time (for the stage index); reads evaluate the full features
            # from the summary, so the per-event cost stays a fold plus one stage evaluation.
            stage = self._stage_now(summary, config)
            rows.append({
                "customer_id": customer_id, "summary": summary.to_json(),
                "features": {"lifecycle_stage": stage, "as_of": as_of}, "lifecycle_stage": stage,
            })
        versions = await repo.upsert_features(ws, rows, now=batch.now)
        batch.summaries = {c: (versions[c], summaries[c]) for c in versions}

    def _remember_summaries(self, batch: _Batch) -> None:
        """After the commit: the summaries just written, keyed by the version the rows now carry."""
        cache = self._summaries
        for customer_id, entry in batch.summaries.items():
            cache[customer_id] = entry
            cache.move_to_end(customer_id)
        while len(cache) > SUMMARY_CACHE_SIZE:
            cache.popitem(last=False)

    def _features_now(self, summary: Summary, config: WorkspaceConfig) -> Features:
        now = utcnow()
        # Events may carry a timestamp slightly ahead of our clock; never evaluate before the newest one.
        as_of = max(now, summary.last_seen) if summary.last_seen else now
        return features_at(summary, as_of, thresholds=config.thresholds, segments=config.segments)

    def _stage_now(self, summary: Summary, config: WorkspaceConfig) -> str:
        now = utcnow()
        as_of = max(now, summary.last_seen) if summary.last_seen else now
        tenure = (as_of - summary.first_seen) / timedelta(days=1) if summary.first_seen else 0.0
        return lifecycle_stage(summary, as_of=as_of, tenure_days=tenure, thresholds=config.thresholds)

    def _fresh_config(self, workspace_id: str) -> WorkspaceConfig | None:
        cached = self._config.get(workspace_id)
        if cached is not None and time.monotonic() - cached.loaded_at < CONFIG_TTL_SECONDS:
            return cached
        return None

    async def _cached_config(self, workspace_id: str) -> WorkspaceConfig:
        """The workspace's configuration, from the cache while it is fresh (no connection needed)."""
        cached = self._fresh_config(workspace_id)
        if cached is not None:
            return cached
        async with self._reads() as session:
            return await self._workspace_config(ProfileRepository(session), workspace_id)

    async def _workspace_config(self, repo: ProfileRepository, workspace_id: str) -> WorkspaceConfig:
        cached = self._fresh_config(workspace_id)
        if cached is not None:
            return cached
        row = await repo.settings(workspace_id)
        thresholds = LifecycleThresholds.from_json(row.lifecycle) if row else DEFAULT_THRESHOLDS
        definitions = []
        for seg in await repo.segments(workspace_id):
            try:
                definitions.append(segment_rules.define(seg.name, seg.expression, description=seg.description))
            except ExpressionError:
                # Stored before a feature it used was renamed: it matches nobody until redefined.
                log.warning("segment %s of %s no longer parses", seg.name, workspace_id)
        config = WorkspaceConfig(thresholds, tuple(definitions), time.monotonic())
        self._config[workspace_id] = config
        return config

    async def _publish(self, workspace_id: str, batch: _Batch) -> None:
        if not self.publisher.enabled or not batch.stored or batch.outbox_id is None:
            return
        rows = [values for _, values in batch.stored]
        if await self.publisher.publish([stream_event_from(workspace_id, values) for values in rows]):
            async with self._reads() as session:
                await ProfileRepository(session).remove_outbox(batch.outbox_id)

    async def republish_pending(self, *, min_age: timedelta = timedelta(seconds=5), limit: int = 500) -> int:
        """Publish events Redis refused earlier; returns how many made it onto the streams."""
        if not self.publisher.enabled:
            return 0
        published = 0
        async with self.sessions() as session:
            repo = ProfileRepository(session)
            for outbox_id, event_ids in await repo.outbox(created_before=utcnow() - min_age, limit=limit):
                events = await repo.events_by_ids(event_ids)
                if not await self.publisher.publish([stream_event(r.workspace_id, r) for r in events]):
                    await session.commit()
                    return published
                await repo.remove_outbox(outbox_id)
                await session.commit()
                published += len(events)
        if published:
            return published
        # Events stored before the outbox existed carry their own flag.
        async with self.sessions() as session:
            repo = ProfileRepository(session)
            rows = await repo.unpublished(received_before=utcnow() - min_age, limit=limit)
            if not rows or not await self.publisher.publish([stream_event(r.workspace_id, r) for r in rows]):
                return 0
            await repo.mark_published([r.id for r in rows])
            await session.commit()
        return len(rows)

    async def run_republisher(self, *, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                while await self.republish_pending(min_age=timedelta(seconds=interval)) > 0:
                    pass
            except Exception:
                log.exception("republishing pending events failed; will retry")

    async def identify(
        self,
        workspace_id: str,
        *,
        user_id: str,
        anonymous_id: str,
        traits: dict[str, Any],
        timestamp: datetime | None,
        message_id: str,
    ) -> str:
        event = IncomingEvent(
            message_id=message_id or f"identify-{uuid.uuid4().hex}",
            type="identify",
            user_id=user_id,
            anonymous_id=anonymous_id,
            traits=traits,
            timestamp=timestamp,
        )
        return (await self._ingest_one(workspace_id, event)).customer_id

    async def alias(self, workspace_id: str, *, previous_id: str, user_id: str, message_id: str) -> ItemResult:
        if not user_id.strip():
            raise InvalidArgument("user_id is required", field="user_id")
        event = IncomingEvent(
            message_id=message_id or f"alias-{uuid.uuid4().hex}",
            type="alias",
            user_id=user_id,
            previous_id=previous_id,
        )
        return await self._ingest_one(workspace_id, event)

    async def _ingest_one(self, workspace_id: str, event: IncomingEvent) -> ItemResult:
        (result,) = await self.ingest(workspace_id, [event])
        if result.status == "rejected":
            raise InvalidArgument(result.error, field=result.field)
        if result.status == "duplicate":
            async with self.sessions() as session:
                live = await ProfileRepository(session).live_customer(workspace_id, result.customer_id)
            owner = live.customer_id if live else ""
            return ItemResult(result.index, result.message_id, "duplicate", customer_id=owner)
        return result

    # reads

    async def _lookup(
        self, repo: ProfileRepository, workspace_id: str, reference: str
    ) -> tuple[Identifier, str] | None:
        candidates = lookup_candidates(reference, country_code=self.country_code)
        owners = await repo.owners(workspace_id, candidates)
        for kind in LOOKUP_ORDER:
            for ident in candidates:
                if ident.kind == kind and ident in owners:
                    return ident, owners[ident]
        return None

    async def _customer(
        self, repo: ProfileRepository, workspace_id: str, reference: str, identifier: Identifier | None = None
    ) -> CustomerRow:
        _require_workspace(workspace_id)
        row: CustomerRow | None = None
        if identifier is not None:
            try:
                value = normalise(identifier.kind, identifier.value, country_code=self.country_code)
            except ValueError as exc:
                raise InvalidArgument(str(exc), field="identifier") from exc
            owners = await repo.owners(workspace_id, [Identifier(identifier.kind, value)])
            if owners:
                row = await repo.live_customer(workspace_id, next(iter(owners.values())))
            field_name = "identifier"
        else:
            reference = reference.strip()
            if not reference:
                raise InvalidArgument("customer_id or identifier is required", field="customer_id")
            if reference.startswith(CUSTOMER_PREFIX):
                row = await repo.live_customer(workspace_id, reference)
            if row is None:
                found = await self._lookup(repo, workspace_id, reference)
                if found is not None:
                    row = await repo.live_customer(workspace_id, found[1])
            field_name = "customer_id"
        if row is None:
            raise NotFound("no customer with that id or identifier", field=field_name)
        return row

    async def profile(self, workspace_id: str, reference: str, identifier: Identifier | None = None) -> ProfileView:
        view, _ = await self._read_profile(workspace_id, reference, identifier)
        return view

    async def profile_with_scores(
        self, workspace_id: str, reference: str, identifier: Identifier | None = None
    ) -> tuple[ProfileView, list[StoredScore]]:
        """The profile and the model scores stored for it, read on one connection."""
        scores: list[StoredScore] = []
        view, _ = await self._read_profile(workspace_id, reference, identifier, scores_into=scores)
        return view, scores

    async def _read_profile(
        self,
        workspace_id: str,
        reference: str,
        identifier: Identifier | None = None,
        *,
        scores_into: list[StoredScore] | None = None,
    ) -> tuple[ProfileView, Summary]:
        """Customer, summary, identifiers and consents in one statement (the hot read path)."""
        _require_workspace(workspace_id)
        if identifier is not None:
            try:
                value = normalise(identifier.kind, identifier.value, country_code=self.country_code)
            except ValueError as exc:
                raise InvalidArgument(str(exc), field="identifier") from exc
            customer_id, candidates, field_name = None, [Identifier(identifier.kind, value)], "identifier"
        else:
            reference = reference.strip()
            if not reference:
                raise InvalidArgument("customer_id or identifier is required", field="customer_id")
            customer_id = reference if reference.startswith(CUSTOMER_PREFIX) else None
            candidates = lookup_candidates(reference, country_code=self.country_code)
            field_name = "customer_id"
        assert self._statements is not None, "the session factory is bound to no engine"
        async with self._statements.connect() as connection:
            rows = await profile_rows(
                connection, workspace_id, customer_id=customer_id, candidates=candidates,
                scores=scores_into is not None,
            )
        if not rows or rows[0][0] != 0:
            raise NotFound("no customer with that id or identifier", field=field_name)
        config = await self._cached_config(workspace_id)
        _, cid, traits_json, _, _, _, _, erased_at = rows[0]
        summary = Summary()
        identifiers: list[Identifier] = []
        consents: list[ConsentRecord] = []
        for part, a, b, c, d, e, f, at in rows[1:]:
            if part == 1:
                summary = Summary.from_json(_json(b) or {})
            elif part == 2:
                identifiers.append(Identifier(a, b))
            elif part == 4:
                assert scores_into is not None
                scores_into.append(StoredScore(cid, a, float(d), b, c, _datetime(at), int(e or 0)))
            else:
                consents.append(ConsentRecord(
                    channel=a, purpose=b, status=c, source=d or "", lawful_basis=e or "", policy_version=f or "",
                    updated_at=_datetime(at),
                ))
        traits = _json(traits_json) or {}
        view = ProfileView(
            customer_id=cid,
            workspace_id=workspace_id,
            identifiers=identifiers,
            traits=traits,
            events_count=summary.events_count,
            first_seen=summary.first_seen,
            last_seen=summary.last_seen,
            features=self._features_now(summary, config),
            consents=consents,
            time_zone=str(traits.get("time_zone") or self.default_time_zone),
            locale=str(traits.get("locale") or self.default_locale),
            erased_at=_datetime(erased_at) if erased_at else None,
        )
        return view, summary

    async def _view(self, repo: ProfileRepository, workspace_id: str, customer: CustomerRow) -> ProfileView:
        cid = customer.customer_id
        features, summary = await self._stored_features(repo, workspace_id, cid)
        identifiers = await repo.identifiers_of(workspace_id, cid)
        consents = [consent_record(r) for r in await repo.consents(workspace_id, cid)]
        traits = dict(customer.traits or {})
        return ProfileView(
            customer_id=cid,
            workspace_id=workspace_id,
            identifiers=identifiers,
            traits=traits,
            events_count=summary.events_count,
            first_seen=summary.first_seen,
            last_seen=summary.last_seen,
            features=features,
            consents=consents,
            time_zone=str(traits.get("time_zone") or self.default_time_zone),
            locale=str(traits.get("locale") or self.default_locale),
            erased_at=aware(customer.erased_at) if customer.erased_at else None,
        )

    async def features(self, workspace_id: str, reference: str) -> tuple[str, Features]:
        view, _ = await self._read_profile(workspace_id, reference)
        return view.customer_id, view.features

    async def _stored_features(
        self, repo: ProfileRepository, workspace_id: str, customer_id: str
    ) -> tuple[Features, Summary]:
        row = await repo.features_row(workspace_id, customer_id)
        summary = Summary.from_json(row.summary) if row else Summary()
        config = await self._workspace_config(repo, workspace_id)
        # Time-relative features (recency, windows, stage, segments) are evaluated now, on every read.
        return self._features_now(summary, config), summary

    async def list_events(
        self, workspace_id: str, reference: str, *, page_size: int, page_token: str
    ) -> tuple[str, list[EventRow], str]:
        size = min(max(page_size or DEFAULT_PAGE, 1), MAX_PAGE)
        before = _decode_cursor(page_token) if page_token else None
        async with self.sessions() as session:
            repo = ProfileRepository(session)
            customer = await self._customer(repo, workspace_id, reference)
            rows = await repo.events_page(workspace_id, customer.customer_id, before=before, limit=size + 1)
        token = _encode_cursor(rows[size - 1]) if len(rows) > size else ""
        return customer.customer_id, rows[:size], token

    # consent

    async def set_consents(
        self, workspace_id: str, reference: str, changes: Sequence[ConsentChangeInput], *, actor: str
    ) -> tuple[str, list[ConsentRecord]]:
        if not changes:
            raise InvalidArgument("at least one change is required", field="changes")
        now = utcnow()
        prepared = [self._prepare_change(i, c, now=now) for i, c in enumerate(changes)]
        async with self._locks[workspace_id]:
            async with self.sessions() as session:
                repo = ProfileRepository(session)
                cid = (await self._customer(repo, workspace_id, reference)).customer_id
                state = {(r.channel, r.purpose): consent_record(r) for r in await repo.consents(workspace_id, cid)}
                # Audit first: a change the audit log did not take is never applied (fail-closed).
                history: list[ConsentHistoryRow] = []
                for record in prepared:
                    current = state.get(record.key)
                    entry = ConsentAuditEntry(
                        change_id=f"cch_{uuid.uuid4().hex}",
                        customer_id=cid,
                        channel=record.channel,
                        purpose=record.purpose,
                        status=record.status,
                        previous_status=current.status if current else "",
                        source=record.source,
                        lawful_basis=record.lawful_basis,
                        policy_version=record.policy_version,
                        actor=actor,
                        occurred_at=record.updated_at,
                    )
                    audit_id = await self.audit.append_consent(workspace_id, entry)
                    history.append(
                        ConsentHistoryRow(
                            **{k: v for k, v in asdict(entry).items()},
                            workspace_id=workspace_id,
                            recorded_at=now,
                            audit_record_id=audit_id,
                        )
                    )
                    if consent_rules.supersedes(record.updated_at, current):
                        state[record.key] = record
                for row in history:
                    repo.add_consent_history(row)
                await repo.replace_consents(workspace_id, cid, state.values())
                await session.commit()
        return cid, sorted(state.values(), key=lambda r: r.key)

    def _prepare_change(self, index: int, change: ConsentChangeInput, *, now: datetime) -> ConsentRecord:
        prefix = f"changes[{index}]"
        if not change.channel:
            raise InvalidArgument("channel is required", field=f"{prefix}.channel")
        if change.status not in consent_rules.STATUSES:
            raise InvalidArgument("status must be granted, denied or withdrawn", field=f"{prefix}.status")
        try:
            purpose = consent_rules.normalise_purpose(change.purpose)
        except ValueError as exc:
            raise InvalidArgument(str(exc), field=f"{prefix}.purpose") from exc
        occurred = aware(change.occurred_at) if change.occurred_at else now
        if occurred > now + timedelta(days=1):
            raise InvalidArgument("occurred_at is in the future", field=f"{prefix}.occurred_at")
        return ConsentRecord(
            channel=change.channel,
            purpose=purpose,
            status=change.status,
            source=change.source.strip(),
            lawful_basis=change.lawful_basis.strip(),
            policy_version=change.policy_version.strip(),
            updated_at=occurred,
        )

    async def check_consent(
        self, workspace_id: str, reference: str, *, channel: str, purpose: str
    ) -> tuple[ConsentRecord | None, ConsentAnswer]:
        if not channel:
            raise InvalidArgument("channel is required", field="channel")
        try:
            purpose = consent_rules.normalise_purpose(purpose)
        except ValueError as exc:
            raise InvalidArgument(str(exc), field="purpose") from exc
        async with self.sessions() as session:
            repo = ProfileRepository(session)
            cid = (await self._customer(repo, workspace_id, reference)).customer_id
            row = await repo.consent(workspace_id, cid, channel=channel, purpose=purpose)
        record = consent_record(row) if row else None
        return record, consent_rules.check(record, channel=channel, purpose=purpose)

    async def consent_history(self, workspace_id: str, reference: str) -> list[ConsentHistoryRow]:
        async with self.sessions() as session:
            repo = ProfileRepository(session)
            cid = (await self._customer(repo, workspace_id, reference)).customer_id
            return await repo.consent_history(workspace_id, cid)

    # workspace settings

    async def get_settings(self, workspace_id: str) -> SettingsView:
        _require_workspace(workspace_id)
        async with self.sessions() as session:
            return _settings_view(await ProfileRepository(session).settings(workspace_id))

    async def set_settings(
        self, workspace_id: str, changes: dict[str, float], *, actor: str
    ) -> SettingsView:
        """`changes` holds the thresholds to change; others keep their current value."""
        _require_workspace(workspace_id)
        async with self.sessions() as session:
            repo = ProfileRepository(session)
            current = _settings_view(await repo.settings(workspace_id)).lifecycle
            wanted = replace_thresholds(current, changes)
            for name, problem in wanted.problems():
                raise InvalidArgument(problem, field=f"lifecycle.{name}")
            row = await repo.put_settings(workspace_id, lifecycle=wanted.to_json(), actor=actor, now=utcnow())
            await session.commit()
            view = _settings_view(row)
        self._config.pop(workspace_id, None)
        return view

    # segments

    async def create_segment(
        self, workspace_id: str, *, name: str, expression: str, description: str, actor: str
    ) -> SegmentView:
        _require_workspace(workspace_id)
        name = name.strip()
        if name in segment_rules.BUILTIN_NAMES:
            raise AlreadyExists(f"{name} is a built-in segment", field="name")
        try:
            definition = segment_rules.define(name, expression, description=description)
        except ExpressionError as exc:
            field_name = "name" if str(exc).startswith("name") else "expression"
            raise InvalidArgument(str(exc), field=field_name) from None
        now = utcnow()
        async with self.sessions() as session:
            repo = ProfileRepository(session)
            if await repo.segment(workspace_id, name) is not None:
                raise AlreadyExists(f"segment {name} exists; delete it first", field="name")
            repo.add_segment(
                SegmentRow(
                    workspace_id=workspace_id, name=name, expression=definition.expression.strip(),
                    description=description.strip(), created_at=now, created_by=actor,
                )
            )
            try:
                await session.commit()
            except IntegrityError:
                raise AlreadyExists(f"segment {name} exists; delete it first", field="name") from None
        self._config.pop(workspace_id, None)
        return SegmentView(name, definition.expression.strip(), description.strip(), False, now)

    async def list_segments(self, workspace_id: str) -> list[SegmentView]:
        _require_workspace(workspace_id)
        async with self.sessions() as session:
            rows = await ProfileRepository(session).segments(workspace_id)
        builtin = [SegmentView(r.name, "", r.description, True) for r in segment_rules.RULES]
        return builtin + [
            SegmentView(r.name, r.expression, r.description, False, aware(r.created_at)) for r in rows
        ]

    async def delete_segment(self, workspace_id: str, name: str) -> bool:
        _require_workspace(workspace_id)
        if name in segment_rules.BUILTIN_NAMES:
            raise FailedPrecondition(f"{name} is a built-in segment and cannot be deleted", field="name")
        async with self.sessions() as session:
            deleted = await ProfileRepository(session).delete_segment(workspace_id, name)
            await session.commit()
        self._config.pop(workspace_id, None)
        if not deleted:
            raise NotFound(f"no segment named {name}", field="name")
        return True

    async def count_segment(self, workspace_id: str, name: str) -> tuple[int, int, datetime]:
        """(members, customers evaluated, as of): every live customer's features evaluated now."""
        _require_workspace(workspace_id)
        if not name:
            raise InvalidArgument("name is required", field="name")
        async with self.sessions() as session:
            repo = ProfileRepository(session)
            self._config.pop(workspace_id, None)
            config = await self._workspace_config(repo, workspace_id)
            custom = tuple(d for d in config.segments if d.name == name)
            if not custom and name not in segment_rules.BUILTIN_NAMES:
                raise NotFound(f"no segment named {name}", field="name")
            only = WorkspaceConfig(config.thresholds, custom, config.loaded_at)
            members = customers = 0
            async for _, summary in repo.summaries(workspace_id):
                customers += 1
                members += name in self._features_now(Summary.from_json(summary), only).segments
        return members, customers, utcnow()

    # privacy (PDPA)

    async def export_customer(self, workspace_id: str, reference: str) -> CustomerExport:
        async with self.sessions() as session:
            repo = ProfileRepository(session)
            customer = await self._customer(repo, workspace_id, reference)
            cid = customer.customer_id
            view = await self._view(repo, workspace_id, customer)
            events = await repo.all_events(workspace_id, cid)
            history = await repo.consent_history(workspace_id, cid)
            merges: list[MergeRow] = await repo.merges_into(workspace_id, cid)
        return CustomerExport(view, events, history, [m.merged_id for m in merges])

    async def erase_customer(self, workspace_id: str, reference: str, *, actor: str) -> ErasureResult:
        """Removes identifiers, traits and personal event fields; the summary behind the features stays
        (it holds amounts, times and categories only). Audit shreds its key first: fail-closed."""
        now = utcnow()
        async with self._locks[workspace_id]:
            async with self.sessions() as session:
                repo = ProfileRepository(session)
                customer = await self._customer(repo, workspace_id, reference)
                cid = customer.customer_id
                locked = await repo.customer(workspace_id, cid, for_update=True)
                assert locked is not None
                shredded = await self.audit.erase_customer(
                    workspace_id, cid, actor=actor, reason="PDPA erasure request"
                )
                identifiers = await repo.remove_identifiers(workspace_id, cid)
                await repo.erase_merged_traits(workspace_id, cid)
                locked.traits, locked.trait_times = {}, {}
                locked.erased_at, locked.updated_at = now, now
                events = await repo.all_events(workspace_id, cid)
                for row in events:
                    row.user_id = row.anonymous_id = row.previous_id = ""
                    row.traits, row.context = {}, {}
                    row.properties = scrub_properties(row.properties or {})
                erasure = ErasureRow(
                    erasure_id=f"era_{uuid.uuid4().hex}", workspace_id=workspace_id, customer_id=cid,
                    requested_by=actor, counts={"events": len(events), "identifiers": identifiers},
                    audit_shredded=shredded, erased_at=now,
                )
                repo.add_erasure(erasure)
                await session.commit()
        log.info("erased personal data of %s in %s (%d events)", cid, workspace_id, len(events))
        return ErasureResult(cid, erasure.erasure_id, now, len(events), identifiers, shredded)


def stream_event(workspace_id: str, row: EventRow) -> StreamEvent:
    return StreamEvent(
        workspace_id=workspace_id,
        message_id=row.message_id,
        customer_id=row.customer_id,
        event=row.event,
        type=row.type,
        timestamp=aware(row.timestamp),
        properties=row.properties or {},
    )


def stream_event_from(workspace_id: str, values: dict[str, Any]) -> StreamEvent:
    return StreamEvent(
        workspace_id=workspace_id,
        message_id=values["message_id"],
        customer_id=values["customer_id"],
        event=values["event"],
        type=values["type"],
        timestamp=aware(values["timestamp"]),
        properties=values["properties"],
        properties_json=values.get("properties_json", ""),
    )


def replace_thresholds(current: LifecycleThresholds, changes: dict[str, float]) -> LifecycleThresholds:
    unknown = set(changes) - set(current.to_json())
    if unknown:
        raise InvalidArgument(f"unknown setting {sorted(unknown)[0]}", field=f"lifecycle.{sorted(unknown)[0]}")
    return LifecycleThresholds(**{**current.to_json(), **changes})


def _settings_view(row: WorkspaceSettingsRow | None) -> SettingsView:
    if row is None:
        return SettingsView(DEFAULT_THRESHOLDS)
    return SettingsView(LifecycleThresholds.from_json(row.lifecycle), aware(row.updated_at), row.updated_by)


def _json(value: Any) -> Any:
    """JSON columns read through a raw statement come back as text."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def _datetime(value: Any) -> datetime:
    """SQLite hands timestamps of raw statements back as text."""
    return aware(datetime.fromisoformat(value) if isinstance(value, str) else value)


def _retryable(exc: Exception) -> bool:
    """Unique-constraint races and deadlocks resolve on a retry; other database errors do not."""
    if isinstance(exc, IntegrityError):
        return True
    return "deadlock" in str(exc).lower() or "could not serialize" in str(exc).lower()


def _require_workspace(workspace_id: str) -> None:
    if not workspace_id:
        raise InvalidArgument("workspace_id is required", field="workspace_id")


def _encode_cursor(row: EventRow) -> str:
    raw = f"{aware(row.timestamp).isoformat()}|{row.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_cursor(token: str) -> tuple[datetime, int]:
    try:
        stamp, row_id = base64.urlsafe_b64decode(token.encode()).decode().rsplit("|", 1)
        return aware(datetime.fromisoformat(stamp)), int(row_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument("page_token is not valid", field="page_token") from exc
