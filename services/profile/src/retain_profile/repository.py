"""Every profile query lives here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from typing import Any

from retain_kit.protoconv import aware
from sqlalchemy import and_, delete, insert, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from retain_profile.domain.consent import ConsentRecord
from retain_profile.domain.features import EventFact
from retain_profile.domain.identity import CustomerRef, Identifier
from retain_profile.models import (
    ConsentHistoryRow,
    ConsentRow,
    CustomerRow,
    ErasureRow,
    EventRow,
    FeaturesRow,
    IdentifierRow,
    MergeRow,
    SegmentRow,
    WorkspaceSettingsRow,
)

# Merged-away ids can chain (a merged into b, b into c); this bounds the walk.
MAX_MERGE_HOPS = 16


def consent_record(row: ConsentRow) -> ConsentRecord:
    return ConsentRecord(
        channel=row.channel,
        purpose=row.purpose,
        status=row.status,
        source=row.source,
        lawful_basis=row.lawful_basis,
        policy_version=row.policy_version,
        updated_at=aware(row.updated_at),
    )


class ProfileRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # customers and identifiers

    async def owners(self, workspace_id: str, identifiers: Iterable[Identifier]) -> dict[Identifier, str]:
        keys = [(i.kind, i.value) for i in identifiers]
        if not keys:
            return {}
        stmt = select(IdentifierRow).where(
            IdentifierRow.workspace_id == workspace_id,
            tuple_(IdentifierRow.kind, IdentifierRow.value).in_(keys),
        )
        rows = (await self.session.execute(stmt)).scalars()
        return {Identifier(r.kind, r.value): r.customer_id for r in rows}

    async def identifiers_of(self, workspace_id: str, customer_id: str) -> list[Identifier]:
        stmt = (
            select(IdentifierRow)
            .where(IdentifierRow.workspace_id == workspace_id, IdentifierRow.customer_id == customer_id)
            .order_by(IdentifierRow.kind, IdentifierRow.value)
        )
        return [Identifier(r.kind, r.value) for r in (await self.session.execute(stmt)).scalars()]

    async def create_customer(self, workspace_id: str, customer_id: str, *, now: datetime) -> CustomerRow:
        row = CustomerRow(
            customer_id=customer_id, workspace_id=workspace_id, created_at=now, updated_at=now,
            merged_into=None, traits={}, trait_times={},
        )
        self.session.add(row)
        return row

    async def lock_customers(self, workspace_id: str, customer_ids: Iterable[str]) -> list[CustomerRow]:
        """Loads (and on PostgreSQL row-locks) many customers at once, in id order so lockers never deadlock."""
        ids = sorted(set(customer_ids))
        if not ids:
            return []
        stmt = (
            select(CustomerRow)
            .where(CustomerRow.workspace_id == workspace_id, CustomerRow.customer_id.in_(ids))
            .order_by(CustomerRow.customer_id)
            .with_for_update()
        )
        return list((await self.session.execute(stmt)).scalars())

    async def customer(self, workspace_id: str, customer_id: str, *, for_update: bool = False) -> CustomerRow | None:
        stmt = select(CustomerRow).where(
            CustomerRow.workspace_id == workspace_id, CustomerRow.customer_id == customer_id
        )
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def live_customer(self, workspace_id: str, customer_id: str) -> CustomerRow | None:
        """The customer behind an id, following merges to the survivor."""
        row = await self.customer(workspace_id, customer_id)
        for _ in range(MAX_MERGE_HOPS):
            if row is None or row.merged_into is None:
                return row
            row = await self.customer(workspace_id, row.merged_into)
        return None

    async def customer_refs(self, workspace_id: str, customer_ids: Iterable[str]) -> list[CustomerRef]:
        stmt = select(CustomerRow.customer_id, CustomerRow.created_at).where(
            CustomerRow.workspace_id == workspace_id, CustomerRow.customer_id.in_(list(customer_ids))
        )
        return [CustomerRef(cid, aware(at)) for cid, at in (await self.session.execute(stmt)).all()]

    async def move_customer(self, workspace_id: str, *, loser: str, survivor: str, reason: str, now: datetime) -> None:
        """Re-home everything the loser owned except consent state (the caller merges that)."""
        for model in (EventRow, IdentifierRow, ConsentHistoryRow):
            await self.session.execute(
                update(model)
                .where(model.workspace_id == workspace_id, model.customer_id == loser)
                .values(customer_id=survivor)
            )
        await self.session.execute(
            update(CustomerRow)
            .where(CustomerRow.workspace_id == workspace_id, CustomerRow.merged_into == loser)
            .values(merged_into=survivor)
        )
        await self.session.execute(
            update(CustomerRow)
            .where(CustomerRow.workspace_id == workspace_id, CustomerRow.customer_id == loser)
            .values(merged_into=survivor, updated_at=now, traits={}, trait_times={})
        )
        await self.session.execute(delete(FeaturesRow).where(FeaturesRow.customer_id == loser))
        self.session.add(
            MergeRow(workspace_id=workspace_id, survivor_id=survivor, merged_id=loser, reason=reason, merged_at=now)
        )

    async def merges_into(self, workspace_id: str, survivor: str) -> list[MergeRow]:
        stmt = (
            select(MergeRow)
            .where(MergeRow.workspace_id == workspace_id, MergeRow.survivor_id == survivor)
            .order_by(MergeRow.id)
        )
        return list((await self.session.execute(stmt)).scalars())

    # events

    async def known_message_ids(self, workspace_id: str, message_ids: Sequence[str]) -> dict[str, str]:
        if not message_ids:
            return {}
        stmt = select(EventRow.message_id, EventRow.customer_id).where(
            EventRow.workspace_id == workspace_id, EventRow.message_id.in_(list(message_ids))
        )
        return {mid: cid for mid, cid in (await self.session.execute(stmt)).all()}

    async def facts(self, workspace_id: str, customer_id: str) -> list[EventFact]:
        stmt = select(EventRow.type, EventRow.event, EventRow.timestamp, EventRow.properties).where(
            EventRow.workspace_id == workspace_id, EventRow.customer_id == customer_id
        )
        return [
            EventFact(type=t, event=e, timestamp=aware(ts), properties=p or {})
            for t, e, ts, p in (await self.session.execute(stmt)).all()
        ]

    async def events_page(
        self, workspace_id: str, customer_id: str, *, before: tuple[datetime, int] | None, limit: int
    ) -> list[EventRow]:
        stmt = select(EventRow).where(EventRow.workspace_id == workspace_id, EventRow.customer_id == customer_id)
        if before is not None:
            ts, row_id = before
            stmt = stmt.where(
                or_(EventRow.timestamp < ts, and_(EventRow.timestamp == ts, EventRow.id < row_id))
            )
        stmt = stmt.order_by(EventRow.timestamp.desc(), EventRow.id.desc()).limit(limit)
        return list((await self.session.execute(stmt)).scalars())

    async def events_by_ids(self, ids: Sequence[int]) -> list[EventRow]:
        stmt = select(EventRow).where(EventRow.id.in_(list(ids))).order_by(EventRow.id)
        return list((await self.session.execute(stmt)).scalars())

    async def unpublished(self, *, received_before: datetime, limit: int) -> list[EventRow]:
        stmt = (
            select(EventRow)
            .where(EventRow.published.is_(False), EventRow.received_at <= received_before)
            .order_by(EventRow.id)
            .limit(limit)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def mark_published(self, ids: Sequence[int]) -> None:
        if ids:
            await self.session.execute(update(EventRow).where(EventRow.id.in_(list(ids))).values(published=True))

    # features

    async def features_row(
        self, workspace_id: str, customer_id: str, *, for_update: bool = False
    ) -> FeaturesRow | None:
        stmt = select(FeaturesRow).where(
            FeaturesRow.workspace_id == workspace_id, FeaturesRow.customer_id == customer_id
        )
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def lock_summaries(self, workspace_id: str, customer_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Stored summaries of these customers, row-locked (PostgreSQL) in id order; plain rows, no ORM."""
        ids = sorted(set(customer_ids))
        if not ids:
            return {}
        stmt = (
            select(FeaturesRow.customer_id, FeaturesRow.summary)
            .where(FeaturesRow.workspace_id == workspace_id, FeaturesRow.customer_id.in_(ids))
            .order_by(FeaturesRow.customer_id)
            .with_for_update()
        )
        return {cid: summary or {} for cid, summary in (await self.session.execute(stmt)).all()}

    async def write_features(self, *, inserts: list[dict[str, Any]], updates: list[dict[str, Any]]) -> None:
        """Bulk INSERT of new feature rows and executemany UPDATE by primary key of existing ones."""
        if inserts:
            await self.session.execute(insert(FeaturesRow), inserts)
        if updates:
            await self.session.execute(update(FeaturesRow), updates)

    async def insert_identifiers(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            await self.session.execute(insert(IdentifierRow), rows)

    async def insert_events(self, rows: list[dict[str, Any]]) -> list[int]:
        """One multi-row INSERT ... RETURNING id; ids come back in the order of `rows`."""
        if not rows:
            return []
        stmt = insert(EventRow).returning(EventRow.id, sort_by_parameter_order=True)
        return list((await self.session.scalars(stmt, rows)).all())

    async def summaries(self, workspace_id: str, *, chunk: int = 1000) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Every live customer's stored feature summary (merged-away customers have none)."""
        stmt = (
            select(FeaturesRow.customer_id, FeaturesRow.summary)
            .where(FeaturesRow.workspace_id == workspace_id)
            .execution_options(yield_per=chunk)
        )
        result = await self.session.stream(stmt)
        async for customer_id, summary in result:
            yield customer_id, summary or {}

    # consent

    async def consents(self, workspace_id: str, customer_id: str) -> list[ConsentRow]:
        stmt = (
            select(ConsentRow)
            .where(ConsentRow.workspace_id == workspace_id, ConsentRow.customer_id == customer_id)
            .order_by(ConsentRow.channel, ConsentRow.purpose)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def consent(self, workspace_id: str, customer_id: str, *, channel: str, purpose: str) -> ConsentRow | None:
        stmt = select(ConsentRow).where(
            ConsentRow.workspace_id == workspace_id,
            ConsentRow.customer_id == customer_id,
            ConsentRow.channel == channel,
            ConsentRow.purpose == purpose,
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def put_consent(self, workspace_id: str, customer_id: str, record: ConsentRecord) -> None:
        row = await self.consent(workspace_id, customer_id, channel=record.channel, purpose=record.purpose)
        if row is None:
            row = ConsentRow(
                workspace_id=workspace_id, customer_id=customer_id, channel=record.channel, purpose=record.purpose
            )
            self.session.add(row)
        row.status = record.status
        row.source = record.source
        row.lawful_basis = record.lawful_basis
        row.policy_version = record.policy_version
        row.updated_at = record.updated_at

    async def replace_consents(self, workspace_id: str, customer_id: str, records: Iterable[ConsentRecord]) -> None:
        wanted = {r.key: r for r in records}
        for row in await self.consents(workspace_id, customer_id):
            if (row.channel, row.purpose) not in wanted:
                await self.session.delete(row)
        for record in wanted.values():
            await self.put_consent(workspace_id, customer_id, record)

    async def drop_consents(self, workspace_id: str, customer_id: str) -> None:
        await self.session.execute(
            delete(ConsentRow).where(ConsentRow.workspace_id == workspace_id, ConsentRow.customer_id == customer_id)
        )

    def add_consent_history(self, row: ConsentHistoryRow) -> None:
        self.session.add(row)

    async def consent_history(self, workspace_id: str, customer_id: str) -> list[ConsentHistoryRow]:
        stmt = (
            select(ConsentHistoryRow)
            .where(ConsentHistoryRow.workspace_id == workspace_id, ConsentHistoryRow.customer_id == customer_id)
            .order_by(ConsentHistoryRow.id)
        )
        return list((await self.session.execute(stmt)).scalars())

    # workspace settings and segments

    async def settings(self, workspace_id: str) -> WorkspaceSettingsRow | None:
        return await self.session.get(WorkspaceSettingsRow, workspace_id)

    async def put_settings(
        self, workspace_id: str, *, lifecycle: dict[str, Any], actor: str, now: datetime
    ) -> WorkspaceSettingsRow:
        row = await self.session.get(WorkspaceSettingsRow, workspace_id, with_for_update=True)
        if row is None:
            row = WorkspaceSettingsRow(workspace_id=workspace_id)
            self.session.add(row)
        row.lifecycle, row.updated_by, row.updated_at = lifecycle, actor, now
        return row

    async def segments(self, workspace_id: str) -> list[SegmentRow]:
        stmt = select(SegmentRow).where(SegmentRow.workspace_id == workspace_id).order_by(SegmentRow.name)
        return list((await self.session.execute(stmt)).scalars())

    async def segment(self, workspace_id: str, name: str) -> SegmentRow | None:
        return await self.session.get(SegmentRow, (workspace_id, name))

    def add_segment(self, row: SegmentRow) -> None:
        self.session.add(row)

    async def delete_segment(self, workspace_id: str, name: str) -> bool:
        result = await self.session.execute(
            delete(SegmentRow).where(SegmentRow.workspace_id == workspace_id, SegmentRow.name == name)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    # privacy

    async def all_events(self, workspace_id: str, customer_id: str) -> list[EventRow]:
        stmt = (
            select(EventRow)
            .where(EventRow.workspace_id == workspace_id, EventRow.customer_id == customer_id)
            .order_by(EventRow.timestamp, EventRow.id)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def remove_identifiers(self, workspace_id: str, customer_id: str) -> int:
        result = await self.session.execute(
            delete(IdentifierRow).where(
                IdentifierRow.workspace_id == workspace_id, IdentifierRow.customer_id == customer_id
            )
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def erase_merged_traits(self, workspace_id: str, survivor: str) -> list[str]:
        """Customers merged into `survivor` (directly or not) have their (already emptied) rows wiped too."""
        merged = [m.merged_id for m in await self.merges_into(workspace_id, survivor)]
        if merged:
            await self.session.execute(
                update(CustomerRow)
                .where(CustomerRow.workspace_id == workspace_id, CustomerRow.customer_id.in_(merged))
                .values(traits={}, trait_times={})
            )
        return merged

    def add_erasure(self, row: ErasureRow) -> None:
        self.session.add(row)

    async def erasures(self, workspace_id: str, customer_id: str) -> list[ErasureRow]:
        stmt = (
            select(ErasureRow)
            .where(ErasureRow.workspace_id == workspace_id, ErasureRow.customer_id == customer_id)
            .order_by(ErasureRow.id)
        )
        return list((await self.session.execute(stmt)).scalars())
