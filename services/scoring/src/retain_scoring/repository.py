"""Every scoring query lives here."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from retain_kit.protoconv import utcnow
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from retain_scoring.domain.offers import OfferCounts
from retain_scoring.models import OfferOutcomeRow, OfferSegmentOutcomeRow, OutcomeEventRow


def to_counts(row: OfferOutcomeRow | OfferSegmentOutcomeRow) -> OfferCounts:
    return OfferCounts(
        offer_id=row.offer_id,
        impressions=row.impressions,
        clicks=row.clicks,
        accepts=row.accepts,
        declines=row.declines,
    )


class OfferOutcomeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def counts(self, workspace_id: str, offer_ids: Sequence[str]) -> dict[str, OfferCounts]:
        stmt = select(OfferOutcomeRow).where(
            OfferOutcomeRow.workspace_id == workspace_id, OfferOutcomeRow.offer_id.in_(list(offer_ids))
        )
        found = {row.offer_id: to_counts(row) for row in (await self.session.execute(stmt)).scalars()}
        return {offer_id: found.get(offer_id, OfferCounts(offer_id)) for offer_id in offer_ids}

    async def segment_counts(
        self, workspace_id: str, offer_ids: Sequence[str], segment: str
    ) -> dict[str, OfferCounts]:
        stmt = select(OfferSegmentOutcomeRow).where(
            OfferSegmentOutcomeRow.workspace_id == workspace_id,
            OfferSegmentOutcomeRow.segment == segment,
            OfferSegmentOutcomeRow.offer_id.in_(list(offer_ids)),
        )
        found = {row.offer_id: to_counts(row) for row in (await self.session.execute(stmt)).scalars()}
        return {offer_id: found.get(offer_id, OfferCounts(offer_id)) for offer_id in offer_ids}

    async def workspace_counts(
        self, workspace_id: str
    ) -> tuple[dict[str, OfferCounts], dict[tuple[str, str], OfferCounts]]:
        """Every offer's counts in the workspace, overall and by (segment, offer)."""
        overall = await self.session.execute(
            select(OfferOutcomeRow).where(OfferOutcomeRow.workspace_id == workspace_id)
        )
        by_segment = await self.session.execute(
            select(OfferSegmentOutcomeRow).where(OfferSegmentOutcomeRow.workspace_id == workspace_id)
        )
        return (
            {row.offer_id: to_counts(row) for row in overall.scalars()},
            {(row.segment, row.offer_id): to_counts(row) for row in by_segment.scalars()},
        )

    async def has_event(self, workspace_id: str, *, decision_id: str, offer_id: str, outcome: str) -> bool:
        stmt = select(OutcomeEventRow.event_id).where(
            OutcomeEventRow.workspace_id == workspace_id,
            OutcomeEventRow.decision_id == decision_id,
            OutcomeEventRow.offer_id == offer_id,
            OutcomeEventRow.outcome == outcome,
        )
        return (await self.session.execute(stmt.limit(1))).first() is not None

    async def add_event(
        self,
        workspace_id: str,
        *,
        decision_id: str,
        offer_id: str,
        customer_id: str,
        outcome: str,
        occurred_at: datetime | None,
        segment: str = "",
    ) -> None:
        """Flushes at once so a duplicate (decision, offer, outcome) raises IntegrityError here."""
        now = utcnow()
        self.session.add(
            OutcomeEventRow(
                event_id=f"oev_{uuid.uuid4().hex}",
                workspace_id=workspace_id,
                decision_id=decision_id or None,
                offer_id=offer_id,
                customer_id=customer_id,
                outcome=outcome,
                segment=segment,
                occurred_at=occurred_at or now,
                recorded_at=now,
            )
        )
        await self.session.flush()

    async def increment(
        self, workspace_id: str, offer_id: str, deltas: dict[str, int], *, segment: str = ""
    ) -> None:
        """Adds to the offer's counters (and its segment's, given one) in place, atomic across replicas."""
        await self._increment(OfferOutcomeRow, {"workspace_id": workspace_id, "offer_id": offer_id}, deltas)
        if segment:
            await self._increment(
                OfferSegmentOutcomeRow,
                {"workspace_id": workspace_id, "offer_id": offer_id, "segment": segment},
                deltas,
            )

    async def _increment(
        self, table: type[OfferOutcomeRow] | type[OfferSegmentOutcomeRow], keys: dict[str, str],
        deltas: dict[str, int],
    ) -> None:
        values = {**keys, "impressions": 0, "clicks": 0, "accepts": 0, "declines": 0, "updated_at": utcnow()}
        insert = postgresql.insert if self.session.get_bind().dialect.name == "postgresql" else sqlite.insert
        await self.session.execute(insert(table).values(**values).on_conflict_do_nothing())
        columns = {name: getattr(table, name) + n for name, n in deltas.items() if n}
        await self.session.execute(
            update(table)
            .where(*(getattr(table, k) == v for k, v in keys.items()))
            .values(updated_at=utcnow(), **columns)
        )
