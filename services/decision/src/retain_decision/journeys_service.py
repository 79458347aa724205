"""Journey use cases: definitions (versioned, audited), templates, the report, and the engine the
worker drives (events and timers in, state and outbox effects recorded, effects carried out).

Delivery and idempotency: an event's changes (instance state, timers, outbox effects, the input
marked as handled) commit in one transaction before the stream entry is acknowledged; a redelivered
event finds its input marked and changes nothing. Sends leave through the outbox and the one decision
pipeline with the key `journey:<instance>:<step>`, so a step re-run after a crash is a duplicate at
the channels service and never a second message.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import resources
from typing import Any, Protocol

from retain_kit.cache import TtlCache
from retain_kit.errors import InvalidArgument, NotFound, RetainError, Unavailable
from retain_kit.expressions import Value
from retain_kit.protoconv import utcnow
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from retain_decision.domain import journeys as jd
from retain_decision.domain import policies
from retain_decision.domain.journeys import Journey, JourneyError, State
from retain_decision.journeys_models import JourneyEffectRow, JourneyRow
from retain_decision.journeys_repository import (
    EffectRepository,
    InstanceRepository,
    JourneyRepository,
    StepLogRepository,
    TimerRepository,
    WatchRepository,
    aware,
)
from retain_decision.ports import AuditEntry, AuditSink, ProfileReader, Scorer
from retain_decision.service import Catalogue, Decisions, Policies, SendRequest, Trigger, new_id

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
TEMPLATES_PACKAGE = "retain_decision.journey_templates"
# The longest goal window an instance is still looked up for (conversions after the steps are done).
MAX_GOAL_DAYS = 90


class TraitWriter(Protocol):
    """The profile service, for the update_trait step."""

    async def update_traits(
        self, workspace_id: str, customer_id: str, traits: Mapping[str, Any], *, message_id: str
    ) -> None: ...


@dataclass(frozen=True)
class StoredJourney:
    journey: Journey
    updated_by: str
    updated_at: datetime


@dataclass(frozen=True)
class Template:
    name: str
    title: str
    description: str
    definition: Mapping[str, Any]


def templates() -> list[Template]:
    out: list[Template] = []
    for entry in sorted(resources.files(TEMPLATES_PACKAGE).iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            data = json.loads(entry.read_text(encoding="utf-8"))
            out.append(Template(entry.name.removesuffix(".json"), data.get("name", ""),
                                data.get("description", ""), data))
    return out


def _invalid(exc: JourneyError) -> InvalidArgument:
    return InvalidArgument(str(exc), field=exc.field)


# --- definitions and the report -----------------------------------------------------------------


@dataclass(frozen=True)
class StepReport:
    step_id: str
    kind: str
    entered: int = 0
    sent: int = 0
    suppressed: Mapping[str, int] = field(default_factory=dict)
    withheld: int = 0
    converted: int = 0
    failed: int = 0


@dataclass(frozen=True)
class Report:
    journey_id: str
    version: int
    entered: int
    treated: int
    holdout: int
    converted_treated: int
    converted_holdout: int
    lift: jd.Lift
    active: int
    completed: int
    exited: int
    steps: tuple[StepReport, ...]
    transitions: tuple[jd.Transition, ...] = ()


class Journeys:
    """Journey definitions per workspace: versioned, audited (RECORD_KIND_CONFIG) before commit."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], audit: AuditSink, catalogue: Catalogue, *,
        clock: Clock = utcnow,
    ) -> None:
        self.sessions = sessions
        self.audit = audit
        self.catalogue = catalogue
        self.clock = clock
        self._lock = asyncio.Lock()

    async def upsert(self, workspace_id: str, definition: Mapping[str, Any], *, actor: str,
                     template: str = "") -> StoredJourney:
        if not workspace_id:
            raise InvalidArgument("workspace_id is required", field="workspace_id")
        if template:
            found = {t.name: t for t in templates()}.get(template)
            if found is None:
                raise NotFound(f"no journey template {template!r}", field="template")
            definition = found.definition
        try:
            journey = jd.validate(jd.from_dict(definition))
        except JourneyError as exc:
            raise _invalid(exc) from exc
        await self._check_offers(workspace_id, journey)
        async with self._lock:
            for _ in range(3):
                async with self.sessions() as session:
                    try:
                        now = self.clock()
                        stored, previous = await JourneyRepository(session).save(
                            workspace_id, journey, actor=actor, now=now
                        )
                        if stored.trigger.kind == "schedule" and stored.active:
                            await TimerRepository(session).set(
                                workspace_id, timer_id=f"schedule:{workspace_id}:{stored.journey_id}",
                                journey_id=stored.journey_id, kind="schedule", instance_id="", step_id="",
                                due_at=now,
                            )
                        await self.audit.append(
                            workspace_id,
                            AuditEntry(
                                kind="config", outcome="journey_upserted", actor=actor,
                                journey_id=stored.journey_id,
                                payload={"journey": jd.to_dict(stored), "previous_version": previous,
                                         "template": template},
                                idempotency_key=f"journey:{stored.journey_id}:v{stored.version}",
                            ),
                        )
                        await session.commit()
                        return StoredJourney(stored, actor, now)
                    except IntegrityError:
                        await session.rollback()
            raise Unavailable("journey was changed concurrently; retry")

    async def _check_offers(self, workspace_id: str, journey: Journey) -> None:
        """A send step must name an offer that exists and is offered on one of its channels."""
        for i, step in enumerate(journey.steps):
            if step.kind != "send" or step.offer_id == jd.NEXT_BEST:
                continue
            offer = await self.catalogue.get(workspace_id, step.offer_id)
            if offer is None:
                raise InvalidArgument(f"offer {step.offer_id!r} not found", field=f"journey.steps[{i}].offer_id")
            if not set(step.channels) & set(offer.channels):
                raise InvalidArgument(f"offer {step.offer_id!r} is offered on none of these channels",
                                      field=f"journey.steps[{i}].channels")

    async def list(self, workspace_id: str) -> list[StoredJourney]:
        if not workspace_id:
            raise InvalidArgument("workspace_id is required", field="workspace_id")
        async with self.sessions() as session:
            rows = await JourneyRepository(session).list_rows(workspace_id)
        return [_stored(r) for r in rows]

    async def get(self, workspace_id: str, journey_id: str, *, version: int = 0) -> StoredJourney:
        if not journey_id:
            raise InvalidArgument("journey_id is required", field="journey_id")
        if version < 0:
            raise InvalidArgument("version must not be negative", field="version")
        async with self.sessions() as session:
            repo = JourneyRepository(session)
            if version:
                v = await repo.version_row(workspace_id, journey_id, version)
                if v is None:
                    raise NotFound(f"journey {journey_id!r} version {version} not found", field="version")
                created = aware(v.created_at)
                assert created is not None
                return StoredJourney(jd.from_dict(json.loads(v.spec)), v.actor, created)
            row = await repo.current_row(workspace_id, journey_id)
        if row is None:
            raise NotFound(f"journey {journey_id!r} not found", field="journey_id")
        return _stored(row)

    async def report(self, workspace_id: str, journey_id: str) -> Report:
        journey = (await self.get(workspace_id, journey_id)).journey
        async with self.sessions() as session:
            logs = StepLogRepository(session)
            instances = await logs.instance_counts(workspace_id, journey_id)
            counts = await logs.counts(workspace_id, journey_id)
            converted_by_step = await logs.converted_by_step(workspace_id, journey_id)
            moves, ends = await logs.paths(workspace_id, journey_id)
        groups = {True: [0, 0], False: [0, 0]}
        status = {"active": 0, "completed": 0, "exited": 0}
        for in_holdout, state, converted, n in instances:
            groups[in_holdout][0] += n
            groups[in_holdout][1] += n if converted else 0
            status[state] = status.get(state, 0) + n
        per_step: dict[str, dict[str, Any]] = {
            s.step_id: {"entered": 0, "sent": 0, "suppressed": {}, "withheld": 0, "failed": 0} for s in journey.steps
        }
        for step_id, outcome, reason, _holdout, n in counts:
            bucket = per_step.setdefault(step_id, {"entered": 0, "sent": 0, "suppressed": {}, "withheld": 0,
                                                   "failed": 0})
            if outcome in ("sent", "queued"):
                bucket["sent"] += n
            elif outcome == "suppressed":
                bucket["suppressed"][reason] = bucket["suppressed"].get(reason, 0) + n
            elif outcome in ("entered", "withheld", "failed"):
                bucket[outcome] += n
        kinds = {s.step_id: s.kind for s in journey.steps}
        steps = tuple(
            StepReport(step_id, kinds.get(step_id, ""), b["entered"], b["sent"], dict(b["suppressed"]),
                       b["withheld"], converted_by_step.get(step_id, 0), b["failed"])
            for step_id, b in per_step.items()
        )
        treated, holdout = groups[False], groups[True]
        return Report(
            journey_id=journey_id, version=journey.version, entered=treated[0] + holdout[0], treated=treated[0],
            holdout=holdout[0], converted_treated=treated[1], converted_holdout=holdout[1],
            lift=jd.lift(treated[1], treated[0], holdout[1], holdout[0]), active=status["active"],
            completed=status["completed"], exited=status["exited"], steps=steps,
            transitions=jd.transitions(journey, moves, ends),
        )


def _stored(row: JourneyRow) -> StoredJourney:
    at = aware(row.updated_at)
    assert at is not None
    return StoredJourney(jd.from_dict(json.loads(row.spec)), row.updated_by, at)


# --- the engine ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamEvent:
    """One entry of the profile's `retain:{workspace_id}:events` stream."""

    workspace_id: str
    message_id: str
    customer_id: str
    event: str
    type: str
    timestamp: datetime
    properties: Mapping[str, Any]


class Conflict(Exception):
    """Another worker moved the instance first: redo the input against the fresh state."""


@dataclass
class _Plan:
    state: State
    effects: list[jd.Effect]
    revision: int | None  # None: a new instance


class _Facts:
    """The customer's features and scores, fetched at most once per input."""

    def __init__(self, fetch: Callable[[], Awaitable[dict[str, Value]]]) -> None:
        self.fetch = fetch
        self.values: dict[str, Value] | None = None

    async def get(self) -> dict[str, Value]:
        if self.values is None:
            self.values = await self.fetch()
        return self.values


@dataclass(frozen=True)
class EngineLimits:
    batch: int = 100
    lease_seconds: float = 30.0
    cache_seconds: float = 2.0
    audience_page: int = 200


class JourneyEngine:
    """Runs journeys: stream events and due timers move instances (through the pure interpreter);
    the outbox effects then go out through the decision pipeline."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        decisions: Decisions,
        catalogue: Catalogue,
        policies: Policies,
        profiles: ProfileReader,
        scorer: Scorer,
        traits: TraitWriter,
        limits: EngineLimits = EngineLimits(),
        clock: Clock = utcnow,
    ) -> None:
        self.sessions = sessions
        self.decisions = decisions
        self.catalogue = catalogue
        self.policies = policies
        self.profiles = profiles
        self.scorer = scorer
        self.traits = traits
        self.limits = limits
        self.clock = clock
        self._active = TtlCache[list[Journey]](limits.cache_seconds)
        self._versions: dict[tuple[str, str, int], Journey] = {}

    # --- reading definitions and facts ---------------------------------------------------------

    async def active(self, workspace_id: str) -> list[Journey]:
        if (cached := self._active.get(workspace_id)) is not None:
            return cached
        async with self.sessions() as session:
            found = await JourneyRepository(session).active(workspace_id)
        self._active.put(workspace_id, found)
        return found

    async def definition(self, workspace_id: str, journey_id: str, version: int) -> Journey | None:
        """The version an instance started on (versions never change, so they are cached for good)."""
        key = (workspace_id, journey_id, version)
        if key not in self._versions:
            async with self.sessions() as session:
                found = await JourneyRepository(session).version(workspace_id, journey_id, version)
            if found is None:
                return None
            self._versions[key] = found
        return self._versions[key]

    async def facts(self, workspace_id: str, customer_id: str) -> dict[str, Value]:
        profile = await self.profiles.get_profile(workspace_id, customer_id)
        values: dict[str, Value] = dict(profile.features)
        try:
            scored = await self.scorer.score_customer(
                workspace_id, profile.customer_id, features=profile.features_message
            )
            values.update(scored.values)
        except RetainError as exc:
            # Conditions on scores then fail closed (an unknown name does not hold).
            log.warning("journey facts without scores for %s: %s", customer_id, exc.message)
        return values

    async def _holdout(self, workspace_id: str, journey: Journey, customer_id: str) -> bool:
        """The policy's holdout share for the journey wins over the definition's; the draw is the one
        the pipeline uses, so policy holdouts agree with what the pipeline would suppress."""
        policy = await self.policies.get(workspace_id)
        share = policy.journey_holdouts.get(journey.journey_id, journey.holdout_share)
        salted = f"{policy.holdout_salt}|{journey.journey_id}"
        return share > 0 and policies.bucket(customer_id, salted) < share

    async def _settle(
        self, journey: Journey, state: State, effects: list[jd.Effect], facts: _Facts, now: datetime
    ) -> tuple[State, list[jd.Effect]]:
        """Answer every NeedFacts (a branch) with the customer's facts and run on."""
        while effects and isinstance(effects[-1], jd.NeedFacts):
            state, more = jd.advance(journey, state, jd.Facts(await facts.get()), now)
            effects = [*effects[:-1], *more]
        return state, effects

    # --- inputs -------------------------------------------------------------------------------

    async def triage(self, workspace_id: str, events: Sequence[StreamEvent]) -> list[bool]:
        """For a batch read from one workspace's stream: which events can start or move a journey at all.
        The others need no work of their own. Every customer of the batch is recorded in the audience of
        scheduled triggers. One query and one write for the whole batch."""
        now = self.clock()
        journeys = await self.active(workspace_id)
        customers = sorted({e.customer_id for e in events if e.customer_id})
        async with self.sessions() as session:
            movable = await InstanceRepository(session).customers_with_movable(
                workspace_id, customers, since=now - timedelta(days=MAX_GOAL_DAYS)
            )
            await WatchRepository(session).touch_many(workspace_id, customers, now=now)
            await session.commit()
        return [
            bool(e.customer_id)
            and (e.customer_id in movable or any(jd.may_start(j, e.event, e.timestamp, now=now) for j in journeys))
            for e in events
        ]

    async def handle_event(self, event: StreamEvent) -> int:
        """Returns how many journey instances the event entered or moved."""
        if not event.customer_id:
            return 0
        journeys = await self.active(event.workspace_id)
        for _ in range(5):
            try:
                return await self._handle_event(event, journeys)
            except (Conflict, IntegrityError):
                continue
        raise Unavailable(f"event {event.message_id} kept conflicting with another worker")

    async def _handle_event(self, event: StreamEvent, journeys: list[Journey]) -> int:
        ws, cid, now = event.workspace_id, event.customer_id, self.clock()
        key = f"event:{event.message_id}"
        jev = jd.Event(event.event, event.properties, event.message_id, event.timestamp)
        facts = _Facts(lambda: self.facts(ws, cid))
        plans: list[_Plan] = []
        observations: list[tuple[str, float]] = []
        async with self.sessions() as session:
            instances, watch = InstanceRepository(session), WatchRepository(session)
            seen = await instances.seen(ws, cid, key)
            for loaded in await instances.for_customer(ws, cid, since=now - timedelta(days=MAX_GOAL_DAYS)):
                journey = await self.definition(ws, loaded.state.journey_id, loaded.state.version)
                if journey is None or journey.journey_id in seen:
                    continue
                state, effects = jd.advance(journey, loaded.state, jev, now)
                state, effects = await self._settle(journey, state, effects, facts, now)
                if effects or state != loaded.state:
                    plans.append(_Plan(state, effects, loaded.revision))
            fresh = now - event.timestamp
            moving = {p.state.journey_id for p in plans}
            for journey in journeys:
                if journey.journey_id in seen or journey.journey_id in moving:
                    continue
                entering = False
                t = journey.trigger
                match t.kind:
                    case "event":
                        if t.event == event.event:
                            values = await facts.get() if jd.needs_facts(t.condition) else {}
                            entering = jd.event_triggers(journey, jev, values, now=now)
                    case "score" | "segment":
                        if fresh > timedelta(hours=journey.entry.max_event_age_hours):
                            continue
                        values = await facts.get()
                        previous = await watch.observation(ws, journey.journey_id, cid)
                        if t.kind == "score":
                            current = values.get(t.score)
                            if not isinstance(current, int | float) or isinstance(current, bool):
                                continue
                            entering = jd.crossed(journey, previous, float(current))
                            observations.append((journey.journey_id, float(current)))
                        else:
                            inside, entering = jd.entered_segment(
                                journey, None if previous is None else previous >= 0.5, values
                            )
                            observations.append((journey.journey_id, 1.0 if inside else 0.0))
                    case "schedule":
                        continue
                    case _:
                        continue
                if not entering:
                    continue
                if not jd.may_enter(journey, await instances.prior(ws, journey.journey_id, cid), now=now):
                    continue
                # The customer entered when the trigger happened, not when a (possibly lagging) worker got
                # to it: waits count from there, and a goal reached in between still converts.
                entered = min(now, event.timestamp)
                state, effects = jd.enter(
                    journey, instance_id=new_id("jin"), customer_id=cid, now=entered,
                    holdout=await self._holdout(ws, journey, cid), context=dict(event.properties),
                )
                state, effects = await self._settle(journey, state, effects, facts, entered)
                plans.append(_Plan(state, effects, None))
            for journey_id, value in observations:
                await watch.observe(ws, journey_id, cid, value, now=now)
            await watch.touch(ws, cid, now=now)
            for plan in plans:
                await self._persist(session, ws, plan, now=now)
                await instances.mark_seen(ws, journey_id=plan.state.journey_id, customer_id=cid, input_key=key,
                                          now=now)
            await session.commit()
        return len(plans)

    async def _persist(self, session: AsyncSession, workspace_id: str, plan: _Plan, *, now: datetime) -> None:
        """The state change and its effects, in the caller's transaction."""
        state = plan.state
        instances = InstanceRepository(session)
        if plan.revision is None:
            await instances.create(workspace_id, state, now=now)
        elif not await instances.save(state, revision=plan.revision, now=now):
            raise Conflict(state.instance_id)
        logs, timers, outbox = StepLogRepository(session), TimerRepository(session), EffectRepository(session)
        common = {"journey_id": state.journey_id, "instance_id": state.instance_id, "customer_id": state.customer_id}
        for effect in plan.effects:
            match effect:
                case jd.StepReached(step_id=step_id):
                    await logs.log(workspace_id, **common, holdout=state.holdout, step_id=step_id,
                                   outcome="entered", now=now)
                case jd.Withheld(step_id=step_id, reason=reason):
                    await logs.log(workspace_id, **common, holdout=state.holdout, step_id=step_id,
                                   outcome="withheld", reason=reason, now=now)
                case jd.SetTimer(step_id=step_id, at=at):
                    await timers.set(workspace_id, timer_id=f"{state.instance_id}:{step_id}",
                                     journey_id=state.journey_id, kind="step", instance_id=state.instance_id,
                                     step_id=step_id, due_at=at)
                case jd.Send():
                    await outbox.add(
                        workspace_id, effect_id=effect.idempotency_key, **common, step_id=effect.step_id,
                        kind="send", now=now,
                        payload={"offer_id": effect.offer_id, "channels": list(effect.channels),
                                 "variables": dict(effect.variables), "idempotency_key": effect.idempotency_key},
                    )
                case jd.UpdateTrait():
                    await outbox.add(
                        workspace_id, effect_id=f"{effect.idempotency_key}:trait", **common, step_id=effect.step_id,
                        kind="trait", now=now,
                        payload={"traits": dict(effect.traits), "idempotency_key": effect.idempotency_key},
                    )
                case jd.NeedFacts() | jd.Converted() | jd.Exit():
                    # Facts were answered in _settle; conversion and exit live in the state itself.
                    pass

    async def fire_due_timers(self) -> int:
        """Fire every due timer (a step's wait, a scheduled trigger); returns how many were fired."""
        now = self.clock()
        lease = timedelta(seconds=self.limits.lease_seconds)
        async with self.sessions() as session:
            rows = await TimerRepository(session).claim_due(now=now, limit=self.limits.batch, lease=lease)
            claimed = [(r.timer_id, r.kind) for r in rows]
            await session.commit()
        fired = 0
        for timer_id, kind in claimed:
            try:
                if kind == "schedule":
                    await self._run_schedule(timer_id)
                else:
                    await self._fire(timer_id)
                fired += 1
            except (Conflict, IntegrityError):
                # Left under lease: the next pass after it lapses retries against the fresh state.
                log.info("timer %s conflicted with another worker; retried later", timer_id)
            except RetainError as exc:
                log.warning("timer %s not fired yet: %s", timer_id, exc.message)
        return fired

    async def _fire(self, timer_id: str) -> None:
        now = self.clock()
        async with self.sessions() as session:
            timer = await TimerRepository(session).get(timer_id)
            if timer is None or timer.status != "pending":
                return
            loaded = await InstanceRepository(session).get(timer.instance_id)
            journey = None
            if loaded is not None:
                journey = await self.definition(loaded.workspace_id, loaded.state.journey_id, loaded.state.version)
            if loaded is not None and journey is not None:
                due = aware(timer.due_at)
                assert due is not None
                state, effects = jd.advance(journey, loaded.state, jd.Timer(timer.step_id, due), now)
                facts = _Facts(lambda: self.facts(loaded.workspace_id, loaded.state.customer_id))
                state, effects = await self._settle(journey, state, effects, facts, now)
                if effects or state != loaded.state:
                    await self._persist(session, loaded.workspace_id, _Plan(state, effects, loaded.revision), now=now)
            # Fired even when the instance had moved on (exited on its goal): the timer is spent.
            timer.status = "fired"
            await session.commit()

    async def _run_schedule(self, timer_id: str) -> None:
        """Every customer seen in the workspace for whom the condition holds enters (entry rules
        apply); then the timer is set for the next run."""
        async with self.sessions() as session:
            timer = await TimerRepository(session).get(timer_id)
            if timer is None or timer.status != "pending":
                return
            ws, journey_id = timer.workspace_id, timer.journey_id
            due = aware(timer.due_at)
            assert due is not None
        journey = next((j for j in await self.active(ws) if j.journey_id == journey_id), None)
        if journey is None:
            # Installed a moment ago, after the active list was cached (its first run is due at once):
            # read the list again before ending the schedule.
            self._active.forget(ws)
            journey = next((j for j in await self.active(ws) if j.journey_id == journey_id), None)
        if journey is None or journey.trigger.kind != "schedule":
            async with self.sessions() as session:
                row = await TimerRepository(session).get(timer_id)
                if row is not None:
                    row.status = "fired"
                await session.commit()
            return
        key = f"schedule:{due.isoformat()}"
        after = ""
        while True:
            async with self.sessions() as session:
                page = await WatchRepository(session).audience(ws, after=after, limit=self.limits.audience_page)
            if not page:
                break
            for cid in page:
                await self._schedule_entry(ws, journey, cid, key)
            after = page[-1]
        async with self.sessions() as session:
            row = await TimerRepository(session).get(timer_id)
            if row is not None:
                now = self.clock()
                step = timedelta(hours=journey.trigger.every_hours)
                upcoming = due + step
                while upcoming <= now:
                    upcoming += step
                row.due_at, row.lease_until = upcoming, None
            await session.commit()

    async def _schedule_entry(self, workspace_id: str, journey: Journey, customer_id: str, key: str) -> None:
        now = self.clock()
        try:
            values = await self.facts(workspace_id, customer_id)
        except NotFound:
            return
        if not jd.holds(journey.trigger.condition, values):
            return
        async with self.sessions() as session:
            instances = InstanceRepository(session)
            if journey.journey_id in await instances.seen(workspace_id, customer_id, key):
                return
            if not jd.may_enter(journey, await instances.prior(workspace_id, journey.journey_id, customer_id),
                                now=now):
                return
            state, effects = jd.enter(
                journey, instance_id=new_id("jin"), customer_id=customer_id, now=now,
                holdout=await self._holdout(workspace_id, journey, customer_id),
            )
            state, effects = await self._settle(journey, state, effects, _Facts(lambda: _const(values)), now)
            await self._persist(session, workspace_id, _Plan(state, effects, None), now=now)
            await instances.mark_seen(workspace_id, journey_id=journey.journey_id, customer_id=customer_id,
                                      input_key=key, now=now)
            await session.commit()

    # --- effects ------------------------------------------------------------------------------

    async def run_effects(self) -> int:
        """Carry out pending outbox effects; returns how many reached a final outcome."""
        now = self.clock()
        lease = timedelta(seconds=self.limits.lease_seconds)
        async with self.sessions() as session:
            rows = await EffectRepository(session).claim(now=now, limit=self.limits.batch, lease=lease)
            claimed = [_Claimed.of(r) for r in rows]
            await session.commit()
        done = 0
        for effect in claimed:
            try:
                outcome, reason = await self._execute(effect)
            except Unavailable as exc:
                # Left pending: retried once the lease lapses (the idempotency key keeps it single).
                log.warning("journey effect %s postponed: %s", effect.effect_id, exc.message)
                continue
            except RetainError as exc:
                outcome, reason = "failed", type(exc).__name__
            async with self.sessions() as session:
                row = await EffectRepository(session).get(effect.effect_id)
                if row is not None and row.status == "pending":
                    row.status = "failed" if outcome == "failed" else "done"
                    row.updated_at = self.clock()
                    await StepLogRepository(session).log(
                        effect.workspace_id, journey_id=effect.journey_id, instance_id=effect.instance_id,
                        customer_id=effect.customer_id, holdout=False, step_id=effect.step_id, outcome=outcome,
                        reason=reason, now=self.clock(),
                    )
                await session.commit()
            done += 1
        return done

    async def _execute(self, effect: _Claimed) -> tuple[str, str]:
        """(outcome, reason): sent, queued, suppressed (with the rule), failed, trait_updated."""
        payload = effect.payload
        if effect.kind == "trait":
            await self.traits.update_traits(effect.workspace_id, effect.customer_id, payload["traits"],
                                            message_id=payload["idempotency_key"])
            return "trait_updated", ""
        key, channels = payload["idempotency_key"], list(payload["channels"])
        actor = f"journey:{effect.journey_id}"
        if payload["offer_id"] == jd.NEXT_BEST:
            outcome = await self.decisions.evaluate_trigger(
                effect.workspace_id, effect.customer_id, channels=channels, limit=1,
                trigger=Trigger("journey", effect.journey_id, actor), dispatch=True, idempotency_key=key,
            )
            if outcome.send is None:
                return "suppressed", "no_candidate"
            return _outcome(outcome.send.status, outcome.send.suppressed)
        offer = await self.catalogue.get(effect.workspace_id, payload["offer_id"])
        if offer is None or not offer.active:
            return "failed", "offer_unavailable"
        first: tuple[str, str] | None = None
        for channel in (c for c in channels if c in offer.channels):
            sent = await self.decisions.send_message(
                effect.workspace_id,
                SendRequest(
                    customer_id=effect.customer_id, channel=channel, offer_id=offer.offer_id, purpose=offer.purpose,
                    idempotency_key=key, actor=actor, variables=payload.get("variables") or {}, trigger="journey",
                    journey_id=effect.journey_id,
                ),
            )
            result = _outcome(sent.status, sent.suppressed)
            if result[0] != "suppressed":
                return result
            # The first channel's reason is the one reported: it is the channel the journey asked for.
            first = first or result
        return first or ("suppressed", "no_channel")


@dataclass(frozen=True)
class _Claimed:
    effect_id: str
    workspace_id: str
    journey_id: str
    instance_id: str
    customer_id: str
    step_id: str
    kind: str
    payload: dict[str, Any]

    @classmethod
    def of(cls, row: JourneyEffectRow) -> _Claimed:
        return cls(row.effect_id, row.workspace_id, row.journey_id, row.instance_id, row.customer_id, row.step_id,
                   row.kind, json.loads(row.payload))


def _outcome(status: str, suppressed: Any) -> tuple[str, str]:
    if status in ("sent", "duplicate"):
        return "sent", ""
    if status == "queued":
        return "queued", ""
    if status == "failed":
        return "failed", "delivery_failed"
    rule = suppressed[0].rule if suppressed else "suppressed"
    return "suppressed", rule


async def _const(values: dict[str, Value]) -> dict[str, Value]:
    return values
