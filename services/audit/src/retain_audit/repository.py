"""Every audit query lives here."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from retain_kit.protoconv import aware
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from retain_audit.domain.chain import GENESIS, Entry, link_hash
from retain_audit.domain.checkpoint import Checkpoint
from retain_audit.models import AuditRecordRow, ChainHeadRow, CheckpointRow, DataKeyRow


@dataclass(frozen=True)
class NewRecord:
    kind: str
    customer_id: str = ""
    decision_id: str = ""
    message_id: str = ""
    channel: str = ""
    journey_id: str = ""
    offer_id: str = ""
    outcome: str = ""
    actor: str = ""
    payload: dict[str, object] | None = None
    occurred_at: datetime | None = None
    idempotency_key: str = ""


@dataclass(frozen=True)
class RecordFilter:
    workspace_id: str
    customer_id: str = ""
    kind: str = ""
    channel: str = ""
    decision_id: str = ""
    journey_id: str = ""
    offer_id: str = ""
    outcome: str = ""
    since: datetime | None = None
    until: datetime | None = None


_CHAIN_COLUMNS = [c for c in AuditRecordRow.__table__.columns if c.name not in {"record_id", "idempotency_key"}]


def to_entry(row: Any) -> Entry:
    """Works on ORM rows and on the plain result rows `chain()` yields."""
    return Entry(
        workspace_id=row.workspace_id,
        seq=row.seq,
        kind=row.kind,
        customer_id=row.customer_id,
        decision_id=row.decision_id,
        message_id=row.message_id,
        channel=row.channel,
        journey_id=row.journey_id,
        offer_id=row.offer_id,
        outcome=row.outcome,
        actor=row.actor,
        payload=json.loads(row.payload),
        occurred_at=aware(row.occurred_at),
        recorded_at=aware(row.recorded_at),
        prev_hash=row.prev_hash,
    )


def to_checkpoint(row: CheckpointRow) -> Checkpoint:
    return Checkpoint(
        workspace_id=row.workspace_id,
        seq=row.seq,
        head_hash=row.head_hash,
        signed_at=aware(row.signed_at),
        signature=row.signature,
        key_id=row.key_id,
    )


def link(
    workspace_id: str, record: NewRecord, *, seq: int, prev_hash: str, payload: dict[str, Any], now: datetime
) -> AuditRecordRow:
    """The next record of the chain (not yet stored), its hash computed over exactly what will be stored."""
    entry = Entry(
        workspace_id=workspace_id,
        seq=seq,
        kind=record.kind,
        customer_id=record.customer_id,
        decision_id=record.decision_id,
        message_id=record.message_id,
        channel=record.channel,
        journey_id=record.journey_id,
        offer_id=record.offer_id,
        outcome=record.outcome,
        actor=record.actor,
        payload=payload,
        occurred_at=record.occurred_at or now,
        recorded_at=now,
        prev_hash=prev_hash,
    )
    return AuditRecordRow(
        record_id=f"aud_{uuid.uuid4().hex}",
        workspace_id=workspace_id,
        seq=entry.seq,
        kind=entry.kind,
        customer_id=entry.customer_id,
        decision_id=entry.decision_id,
        message_id=entry.message_id,
        channel=entry.channel,
        journey_id=entry.journey_id,
        offer_id=entry.offer_id,
        outcome=entry.outcome,
        actor=entry.actor,
        payload=json.dumps(entry.payload, sort_keys=True, ensure_ascii=False),
        occurred_at=entry.occurred_at,
        recorded_at=entry.recorded_at,
        idempotency_key=record.idempotency_key or None,
        prev_hash=entry.prev_hash,
        hash=link_hash(entry),
    )


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def find_by_idempotency_keys(self, workspace_id: str, keys: Iterable[str]) -> dict[str, AuditRecordRow]:
        wanted = sorted(set(keys))
        found: dict[str, AuditRecordRow] = {}
        for start in range(0, len(wanted), 500):
            stmt = select(AuditRecordRow).where(
                AuditRecordRow.workspace_id == workspace_id,
                AuditRecordRow.idempotency_key.in_(wanted[start : start + 500]),
            )
            for row in (await self.session.execute(stmt)).scalars():
                assert row.idempotency_key is not None
                found[row.idempotency_key] = row
        return found

    async def lock_head(self, workspace_id: str) -> ChainHeadRow:
        """The workspace's chain head, locked for this transaction (created on first use)."""
        stmt = select(ChainHeadRow).where(ChainHeadRow.workspace_id == workspace_id).with_for_update()
        head = (await self.session.execute(stmt)).scalar_one_or_none()
        if head is None:
            head = ChainHeadRow(workspace_id=workspace_id, seq=0, hash=GENESIS)
            self.session.add(head)
            await self.session.flush()
        return head

    async def advance_head(self, workspace_id: str, *, old: tuple[int, str], new: tuple[int, str]) -> bool:
        """Move the head from `old` to `new` (seq, hash) if it is still at `old`; the row stays locked until the
        transaction ends. False when another writer moved it first."""
        stmt = (
            update(ChainHeadRow)
            .where(ChainHeadRow.workspace_id == workspace_id, ChainHeadRow.seq == old[0], ChainHeadRow.hash == old[1])
            .values(seq=new[0], hash=new[1])
            .execution_options(synchronize_session=False)
        )
        result = await self.session.execute(stmt)
        return bool(getattr(result, "rowcount", 0) == 1)

    async def insert_records(self, rows: Sequence[AuditRecordRow]) -> None:
        """One multi-row INSERT; the rows stay detached (they are returned to callers as built)."""
        columns = [c.key for c in AuditRecordRow.__table__.columns]
        await self.session.execute(
            insert(AuditRecordRow), [{name: getattr(row, name) for name in columns} for row in rows]
        )

    async def data_keys(self, workspace_id: str, customer_ids: Iterable[str]) -> dict[str, DataKeyRow]:
        wanted = sorted(set(customer_ids))
        found: dict[str, DataKeyRow] = {}
        for start in range(0, len(wanted), 500):
            stmt = select(DataKeyRow).where(
                DataKeyRow.workspace_id == workspace_id, DataKeyRow.customer_id.in_(wanted[start : start + 500])
            )
            found.update({row.customer_id: row for row in (await self.session.execute(stmt)).scalars()})
        return found

    def add_data_key(self, row: DataKeyRow) -> None:
        self.session.add(row)

    async def delete_data_key(self, workspace_id: str, customer_id: str) -> bool:
        stmt = delete(DataKeyRow).where(
            DataKeyRow.workspace_id == workspace_id, DataKeyRow.customer_id == customer_id
        )
        result = await self.session.execute(stmt)
        return bool(getattr(result, "rowcount", 0))

    def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        self.session.add(
            CheckpointRow(
                workspace_id=checkpoint.workspace_id,
                seq=checkpoint.seq,
                head_hash=checkpoint.head_hash,
                signed_at=checkpoint.signed_at,
                signature=checkpoint.signature,
                key_id=checkpoint.key_id,
            )
        )

    async def checkpoint_at(self, workspace_id: str, seq: int) -> CheckpointRow | None:
        stmt = select(CheckpointRow).where(CheckpointRow.workspace_id == workspace_id, CheckpointRow.seq == seq)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def checkpoints(
        self, workspace_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[CheckpointRow]:
        stmt = (
            select(CheckpointRow)
            .where(CheckpointRow.workspace_id == workspace_id, CheckpointRow.seq > after_seq)
            .order_by(CheckpointRow.seq)
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        return list((await self.session.execute(stmt)).scalars())

    async def unsigned_workspaces(self) -> list[str]:
        """Workspaces whose head is newer than their latest checkpoint."""
        latest = (
            select(CheckpointRow.workspace_id, func.max(CheckpointRow.seq).label("seq"))
            .group_by(CheckpointRow.workspace_id)
            .subquery()
        )
        stmt = (
            select(ChainHeadRow.workspace_id)
            .outerjoin(latest, latest.c.workspace_id == ChainHeadRow.workspace_id)
            .where(ChainHeadRow.seq > func.coalesce(latest.c.seq, 0))
        )
        return list((await self.session.execute(stmt)).scalars())

    async def list(self, flt: RecordFilter, *, after_seq: int, limit: int) -> list[AuditRecordRow]:
        stmt = select(AuditRecordRow).where(
            AuditRecordRow.workspace_id == flt.workspace_id, AuditRecordRow.seq > after_seq
        )
        for column, value in (
            (AuditRecordRow.customer_id, flt.customer_id),
            (AuditRecordRow.kind, flt.kind),
            (AuditRecordRow.channel, flt.channel),
            (AuditRecordRow.decision_id, flt.decision_id),
            (AuditRecordRow.journey_id, flt.journey_id),
            (AuditRecordRow.offer_id, flt.offer_id),
            (AuditRecordRow.outcome, flt.outcome),
        ):
            if value:
                stmt = stmt.where(column == value)
        if flt.since is not None:
            stmt = stmt.where(AuditRecordRow.occurred_at >= flt.since)
        if flt.until is not None:
            stmt = stmt.where(AuditRecordRow.occurred_at < flt.until)
        stmt = stmt.order_by(AuditRecordRow.seq).limit(limit)
        return list((await self.session.execute(stmt)).scalars())

    async def chain(self, workspace_id: str, *, batch: int = 5000) -> AsyncIterator[Any]:
        """Plain rows (no ORM identity map) in seq order, so a million-record walk stays flat in memory."""
        last = 0
        while True:
            stmt = (
                select(*_CHAIN_COLUMNS)
                .where(AuditRecordRow.workspace_id == workspace_id, AuditRecordRow.seq > last)
                .order_by(AuditRecordRow.seq)
                .limit(batch)
            )
            rows = (await self.session.execute(stmt)).all()
            if not rows:
                return
            for row in rows:
                yield row
            last = rows[-1].seq
