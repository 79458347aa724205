"""Every audit query lives here."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from retain_kit.protoconv import aware, utcnow
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from retain_audit.domain.chain import GENESIS, Entry, link_hash
from retain_audit.models import AuditRecordRow, ChainHeadRow


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


def to_entry(row: AuditRecordRow) -> Entry:
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


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def find_by_idempotency_key(self, workspace_id: str, key: str) -> AuditRecordRow | None:
        stmt = select(AuditRecordRow).where(
            AuditRecordRow.workspace_id == workspace_id, AuditRecordRow.idempotency_key == key
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def lock_head(self, workspace_id: str) -> ChainHeadRow:
        """The workspace's chain head, locked for this transaction (created on first use)."""
        stmt = select(ChainHeadRow).where(ChainHeadRow.workspace_id == workspace_id).with_for_update()
        head = (await self.session.execute(stmt)).scalar_one_or_none()
        if head is None:
            head = ChainHeadRow(workspace_id=workspace_id, seq=0, hash=GENESIS)
            self.session.add(head)
            await self.session.flush()
        return head

    async def append(self, workspace_id: str, record: NewRecord) -> AuditRecordRow:
        head = await self.lock_head(workspace_id)
        now = utcnow()
        entry = Entry(
            workspace_id=workspace_id,
            seq=head.seq + 1,
            kind=record.kind,
            customer_id=record.customer_id,
            decision_id=record.decision_id,
            message_id=record.message_id,
            channel=record.channel,
            journey_id=record.journey_id,
            offer_id=record.offer_id,
            outcome=record.outcome,
            actor=record.actor,
            payload=dict(record.payload or {}),
            occurred_at=record.occurred_at or now,
            recorded_at=now,
            prev_hash=head.hash,
        )
        digest = link_hash(entry)
        row = AuditRecordRow(
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
            hash=digest,
        )
        self.session.add(row)
        head.seq = entry.seq
        head.hash = digest
        await self.session.flush()
        return row

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

    async def chain(self, workspace_id: str, *, batch: int = 1000) -> AsyncIterator[AuditRecordRow]:
        last = 0
        while True:
            stmt = (
                select(AuditRecordRow)
                .where(AuditRecordRow.workspace_id == workspace_id, AuditRecordRow.seq > last)
                .order_by(AuditRecordRow.seq)
                .limit(batch)
            )
            rows = list((await self.session.execute(stmt)).scalars())
            if not rows:
                return
            for row in rows:
                yield row
            last = rows[-1].seq
