"""Every journey query lives here: definitions, instances, inputs seen, timers, the effect outbox,
the step log, observations and the audience of scheduled triggers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from retain_kit.db import upsert
from sqlalchemy import and_, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from retain_decision.domain import journeys as jd
from retain_decision.domain.journeys import Journey, State
from retain_decision.journeys_models import (
    JourneyAudienceRow,
    JourneyEffectRow,
    JourneyInputRow,
    JourneyInstanceRow,
    JourneyObservationRow,
    JourneyRow,
    JourneyStepLogRow,
    JourneyTimerRow,
    JourneyVersionRow,
)


def aware(at: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    if at is None:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


class JourneyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def save(self, workspace_id: str, journey: Journey, *, actor: str, now: datetime) -> tuple[Journey, int]:
        """The next version (row locked on PostgreSQL; the version key catches races elsewhere)."""
        stmt = (
            select(JourneyRow)
            .where(JourneyRow.workspace_id == workspace_id, JourneyRow.journey_id == journey.journey_id)
            .with_for_update()
        )
        row = (await self.session.execute(stmt)).scalar_one_or_none()
        previous = row.version if row is not None else 0
        stored = replace(journey, version=previous + 1)
        spec = _dump(jd.to_dict(stored))
        self.session.add(
            JourneyVersionRow(workspace_id=workspace_id, journey_id=journey.journey_id, version=stored.version,
                              spec=spec, actor=actor, created_at=now)
        )
        if row is None:
            self.session.add(
                JourneyRow(workspace_id=workspace_id, journey_id=journey.journey_id, version=stored.version,
                           active=stored.active, spec=spec, updated_by=actor, updated_at=now)
            )
        else:
            row.version, row.active, row.spec, row.updated_by, row.updated_at = (
                stored.version, stored.active, spec, actor, now
            )
        await self.session.flush()
        return stored, previous

    async def list_rows(self, workspace_id: str) -> list[JourneyRow]:
        stmt = select(JourneyRow).where(JourneyRow.workspace_id == workspace_id).order_by(JourneyRow.journey_id)
        return list((await self.session.execute(stmt)).scalars())

    async def current_row(self, workspace_id: str, journey_id: str) -> JourneyRow | None:
        return await self.session.get(JourneyRow, (workspace_id, journey_id))

    async def version_row(self, workspace_id: str, journey_id: str, version: int) -> JourneyVersionRow | None:
        return await self.session.get(JourneyVersionRow, (workspace_id, journey_id, version))

    async def active(self, workspace_id: str) -> list[Journey]:
        stmt = select(JourneyRow.spec).where(JourneyRow.workspace_id == workspace_id, JourneyRow.active.is_(True))
        return [jd.from_dict(json.loads(spec)) for spec in (await self.session.execute(stmt)).scalars()]

    async def version(self, workspace_id: str, journey_id: str, version: int) -> Journey | None:
        row = await self.version_row(workspace_id, journey_id, version)
        return jd.from_dict(json.loads(row.spec)) if row is not None else None


def state_of(row: JourneyInstanceRow) -> State:
    entered = aware(row.entered_at)
    assert entered is not None
    return State(
        instance_id=row.instance_id, journey_id=row.journey_id, version=row.version, customer_id=row.customer_id,
        entered_at=entered, holdout=row.holdout, status=row.status, step=row.step, waiting=row.waiting,
        wake_at=aware(row.wake_at), exit_reason=row.exit_reason, converted_at=aware(row.converted_at),
        context=json.loads(row.context or "{}"),
    )


@dataclass(frozen=True)
class Loaded:
    """An instance as read, with the revision a save must still find."""

    workspace_id: str
    state: State
    revision: int


def _may_move(since: datetime) -> Any:
    return or_(
        JourneyInstanceRow.status == "active",
        and_(JourneyInstanceRow.converted_at.is_(None), JourneyInstanceRow.entered_at >= since),
    )


class InstanceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def for_customer(self, workspace_id: str, customer_id: str, *, since: datetime) -> list[Loaded]:
        """Instances an event may still move: running ones, and unconverted ones inside a goal window."""
        stmt = select(JourneyInstanceRow).where(
            JourneyInstanceRow.workspace_id == workspace_id,
            JourneyInstanceRow.customer_id == customer_id,
            _may_move(since),
        )
        rows = (await self.session.execute(stmt)).scalars()
        return [Loaded(r.workspace_id, state_of(r), r.revision) for r in rows]

    async def customers_with_movable(
        self, workspace_id: str, customer_ids: Sequence[str], *, since: datetime
    ) -> set[str]:
        """Which of these customers have an instance an event may still move (one query for a batch)."""
        if not customer_ids:
            return set()
        stmt = select(JourneyInstanceRow.customer_id).distinct().where(
            JourneyInstanceRow.workspace_id == workspace_id,
            JourneyInstanceRow.customer_id.in_(customer_ids),
            _may_move(since),
        )
        return set((await self.session.execute(stmt)).scalars())

    async def get(self, instance_id: str) -> Loaded | None:
        row = await self.session.get(JourneyInstanceRow, instance_id)
        return Loaded(row.workspace_id, state_of(row), row.revision) if row is not None else None

    async def prior(self, workspace_id: str, journey_id: str, customer_id: str) -> jd.Prior:
        mine = (
            JourneyInstanceRow.workspace_id == workspace_id,
            JourneyInstanceRow.journey_id == journey_id,
            JourneyInstanceRow.customer_id == customer_id,
        )
        last = (await self.session.execute(select(func.max(JourneyInstanceRow.entered_at)).where(*mine))).scalar()
        running = select(JourneyInstanceRow.instance_id).where(*mine, JourneyInstanceRow.status == "active")
        active = (await self.session.execute(running.limit(1))).first() is not None
        return jd.Prior(active=active, last_entered_at=aware(last))

    async def create(self, workspace_id: str, state: State, *, now: datetime) -> None:
        self.session.add(
            JourneyInstanceRow(
                instance_id=state.instance_id, workspace_id=workspace_id, journey_id=state.journey_id,
                version=state.version, customer_id=state.customer_id, status=state.status, holdout=state.holdout,
                step=state.step, waiting=state.waiting, wake_at=state.wake_at, entered_at=state.entered_at,
                exit_reason=state.exit_reason, converted_at=state.converted_at, context=_dump(state.context),
                revision=1, updated_at=now,
            )
        )
        await self.session.flush()

    async def save(self, state: State, *, revision: int, now: datetime) -> bool:
        """Compare-and-set on `revision`: False when another writer moved the instance first."""
        stmt = (
            update(JourneyInstanceRow)
            .where(JourneyInstanceRow.instance_id == state.instance_id, JourneyInstanceRow.revision == revision)
            .values(
                status=state.status, step=state.step, waiting=state.waiting, wake_at=state.wake_at,
                exit_reason=state.exit_reason, converted_at=state.converted_at, revision=revision + 1,
                updated_at=now,
            )
        )
        result = await self.session.execute(stmt)
        return bool(getattr(result, "rowcount", 0) == 1)

    async def seen(self, workspace_id: str, customer_id: str, input_key: str) -> set[str]:
        """Journeys that already handled this input for this customer."""
        stmt = select(JourneyInputRow.journey_id).where(
            JourneyInputRow.workspace_id == workspace_id,
            JourneyInputRow.customer_id == customer_id,
            JourneyInputRow.input_key == input_key,
        )
        return set((await self.session.execute(stmt)).scalars())

    async def mark_seen(
        self, workspace_id: str, *, journey_id: str, customer_id: str, input_key: str, now: datetime
    ) -> None:
        self.session.add(JourneyInputRow(workspace_id=workspace_id, journey_id=journey_id, customer_id=customer_id,
                                         input_key=input_key, handled_at=now))
        await self.session.flush()


class TimerRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def set(
        self, workspace_id: str, *, timer_id: str, journey_id: str, kind: str, instance_id: str, step_id: str,
        due_at: datetime,
    ) -> None:
        row = await self.session.get(JourneyTimerRow, timer_id)
        if row is None:
            self.session.add(JourneyTimerRow(
                timer_id=timer_id, workspace_id=workspace_id, journey_id=journey_id, kind=kind,
                instance_id=instance_id, step_id=step_id, due_at=due_at, status="pending", lease_until=None,
            ))
        else:
            row.due_at, row.status, row.lease_until = due_at, "pending", None
        await self.session.flush()

    async def claim_due(self, *, now: datetime, limit: int, lease: timedelta) -> list[JourneyTimerRow]:
        """Due timers nobody holds a lease on; locked while the lease is taken (PostgreSQL skips
        rows another worker has locked; elsewhere the lease alone keeps workers apart)."""
        stmt = (
            select(JourneyTimerRow)
            .where(
                JourneyTimerRow.status == "pending",
                JourneyTimerRow.due_at <= now,
                or_(JourneyTimerRow.lease_until.is_(None), JourneyTimerRow.lease_until < now),
            )
            .order_by(JourneyTimerRow.due_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        rows = list((await self.session.execute(stmt)).scalars())
        for row in rows:
            row.lease_until = now + lease
        await self.session.flush()
        return rows

    async def get(self, timer_id: str) -> JourneyTimerRow | None:
        return await self.session.get(JourneyTimerRow, timer_id)


class EffectRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self, workspace_id: str, *, effect_id: str, journey_id: str, instance_id: str, customer_id: str,
        step_id: str, kind: str, payload: dict[str, Any], now: datetime,
    ) -> None:
        if await self.session.get(JourneyEffectRow, effect_id) is not None:
            return
        self.session.add(JourneyEffectRow(
            effect_id=effect_id, workspace_id=workspace_id, journey_id=journey_id, instance_id=instance_id,
            customer_id=customer_id, step_id=step_id, kind=kind, payload=_dump(payload), status="pending",
            attempts=0, lease_until=None, created_at=now, updated_at=now,
        ))
        await self.session.flush()

    async def claim(self, *, now: datetime, limit: int, lease: timedelta) -> list[JourneyEffectRow]:
        stmt = (
            select(JourneyEffectRow)
            .where(
                JourneyEffectRow.status == "pending",
                or_(JourneyEffectRow.lease_until.is_(None), JourneyEffectRow.lease_until < now),
            )
            .order_by(JourneyEffectRow.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        rows = list((await self.session.execute(stmt)).scalars())
        for row in rows:
            row.lease_until = now + lease
            row.attempts += 1
        await self.session.flush()
        return rows

    async def get(self, effect_id: str) -> JourneyEffectRow | None:
        return await self.session.get(JourneyEffectRow, effect_id)

    async def pending(self, workspace_id: str | None = None) -> int:
        stmt = select(func.count()).select_from(JourneyEffectRow).where(JourneyEffectRow.status == "pending")
        if workspace_id:
            stmt = stmt.where(JourneyEffectRow.workspace_id == workspace_id)
        return int((await self.session.execute(stmt)).scalar_one())


class StepLogRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def log(
        self, workspace_id: str, *, journey_id: str, instance_id: str, customer_id: str, holdout: bool,
        step_id: str, outcome: str, reason: str = "", now: datetime,
    ) -> None:
        """Once per instance, step and outcome (the unique index backs this up across workers)."""
        stmt = select(JourneyStepLogRow.id).where(
            JourneyStepLogRow.instance_id == instance_id,
            JourneyStepLogRow.step_id == step_id,
            JourneyStepLogRow.outcome == outcome,
        )
        if (await self.session.execute(stmt)).first() is not None:
            return
        self.session.add(JourneyStepLogRow(
            workspace_id=workspace_id, journey_id=journey_id, instance_id=instance_id, customer_id=customer_id,
            step_id=step_id, outcome=outcome, reason=reason[:64], holdout=holdout, at=now,
        ))
        await self.session.flush()

    async def counts(self, workspace_id: str, journey_id: str) -> list[tuple[str, str, str, bool, int]]:
        """(step_id, outcome, reason, holdout, count)."""
        stmt = (
            select(JourneyStepLogRow.step_id, JourneyStepLogRow.outcome, JourneyStepLogRow.reason,
                   JourneyStepLogRow.holdout, func.count())
            .where(JourneyStepLogRow.workspace_id == workspace_id, JourneyStepLogRow.journey_id == journey_id)
            .group_by(JourneyStepLogRow.step_id, JourneyStepLogRow.outcome, JourneyStepLogRow.reason,
                      JourneyStepLogRow.holdout)
        )
        return [(s, o, r, bool(h), int(n)) for s, o, r, h, n in (await self.session.execute(stmt)).all()]

    async def converted_by_step(self, workspace_id: str, journey_id: str) -> dict[str, int]:
        """Per step: instances that reached it ("entered") and converted."""
        stmt = (
            select(JourneyStepLogRow.step_id, func.count())
            .join(JourneyInstanceRow, JourneyInstanceRow.instance_id == JourneyStepLogRow.instance_id)
            .where(
                JourneyStepLogRow.workspace_id == workspace_id,
                JourneyStepLogRow.journey_id == journey_id,
                JourneyStepLogRow.outcome == "entered",
                JourneyInstanceRow.converted_at.is_not(None),
            )
            .group_by(JourneyStepLogRow.step_id)
        )
        return {s: int(n) for s, n in (await self.session.execute(stmt)).all()}

    async def paths(
        self, workspace_id: str, journey_id: str
    ) -> tuple[list[tuple[str, str, int]], list[tuple[str, str, str, int]]]:
        """Consecutive steps reached, (step before or "", step, count), and where paths end, (last
        step reached, instance status, exit reason, count). Steps only jump forward and each is
        logged once per instance, so the log's id order is the path order."""
        log = JourneyStepLogRow
        before = func.lag(log.step_id).over(partition_by=log.instance_id, order_by=log.id)
        after = func.lead(log.step_id).over(partition_by=log.instance_id, order_by=log.id)
        reached = (
            select(log.instance_id, log.step_id, before.label("before"), after.label("after"))
            .where(log.workspace_id == workspace_id, log.journey_id == journey_id, log.outcome == "entered")
            .subquery()
        )
        moves = select(reached.c.before, reached.c.step_id, func.count()).group_by(reached.c.before,
                                                                                 reached.c.step_id)
        ends = (
            select(reached.c.step_id, JourneyInstanceRow.status, JourneyInstanceRow.exit_reason, func.count())
            .join(JourneyInstanceRow, JourneyInstanceRow.instance_id == reached.c.instance_id)
            .where(reached.c.after.is_(None))
            .group_by(reached.c.step_id, JourneyInstanceRow.status, JourneyInstanceRow.exit_reason)
        )
        return (
            [(b or "", s, int(n)) for b, s, n in (await self.session.execute(moves)).all()],
            [(s, st, r, int(n)) for s, st, r, n in (await self.session.execute(ends)).all()],
        )

    async def instance_counts(self, workspace_id: str, journey_id: str) -> list[tuple[bool, str, bool, int]]:
        """(holdout, status, converted, count)."""
        converted = JourneyInstanceRow.converted_at.is_not(None)
        stmt = (
            select(JourneyInstanceRow.holdout, JourneyInstanceRow.status, converted, func.count())
            .where(JourneyInstanceRow.workspace_id == workspace_id, JourneyInstanceRow.journey_id == journey_id)
            .group_by(JourneyInstanceRow.holdout, JourneyInstanceRow.status, converted)
        )
        return [(bool(h), s, bool(c), int(n)) for h, s, c, n in (await self.session.execute(stmt)).all()]


class WatchRepository:
    """Observations (score/segment crossings) and the audience of scheduled triggers."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def observation(self, workspace_id: str, journey_id: str, customer_id: str) -> float | None:
        row = await self.session.get(JourneyObservationRow, (workspace_id, journey_id, customer_id))
        return row.value if row is not None else None

    async def observe(self, workspace_id: str, journey_id: str, customer_id: str, value: float, *,
                      now: datetime) -> None:
        row = await self.session.get(JourneyObservationRow, (workspace_id, journey_id, customer_id))
        if row is None:
            self.session.add(JourneyObservationRow(workspace_id=workspace_id, journey_id=journey_id,
                                                   customer_id=customer_id, value=value, updated_at=now))
        else:
            row.value, row.updated_at = value, now
        await self.session.flush()

    async def touch(self, workspace_id: str, customer_id: str, *, now: datetime) -> None:
        row = await self.session.get(JourneyAudienceRow, (workspace_id, customer_id))
        if row is None:
            self.session.add(JourneyAudienceRow(workspace_id=workspace_id, customer_id=customer_id, last_seen_at=now))
        else:
            row.last_seen_at = now
        await self.session.flush()

    async def touch_many(self, workspace_id: str, customer_ids: Sequence[str], *, now: datetime) -> None:
        """`touch` for a batch of customers in one statement."""
        if not customer_ids:
            return
        ids = sorted(set(customer_ids))
        dialect = self.session.get_bind().dialect.name
        if dialect == "postgresql":
            # One statement text whatever the batch size: SQLAlchemy compiles it once (a multi-row VALUES is
            # compiled anew for every batch, which was a quarter of the worker's time under ingest load).
            await self.session.execute(
                text(
                    f"INSERT INTO {JourneyAudienceRow.__tablename__} (workspace_id, customer_id, last_seen_at)"
                    " SELECT CAST(:ws AS text), c, CAST(:now AS timestamptz) FROM unnest(CAST(:ids AS text[])) AS c"
                    " ON CONFLICT (workspace_id, customer_id) DO UPDATE SET last_seen_at = excluded.last_seen_at"
                ),
                {"ws": workspace_id, "now": now, "ids": ids},
            )
            return
        stmt = upsert(dialect, JourneyAudienceRow.__table__, keys=("workspace_id", "customer_id"),
                      update=("last_seen_at",))
        await self.session.execute(stmt, [{"workspace_id": workspace_id, "customer_id": c, "last_seen_at": now}
                                          for c in ids])

    async def audience(self, workspace_id: str, *, after: str, limit: int) -> Sequence[str]:
        stmt = (
            select(JourneyAudienceRow.customer_id)
            .where(JourneyAudienceRow.workspace_id == workspace_id, JourneyAudienceRow.customer_id > after)
            .order_by(JourneyAudienceRow.customer_id)
            .limit(limit)
        )
        return list((await self.session.execute(stmt)).scalars())
