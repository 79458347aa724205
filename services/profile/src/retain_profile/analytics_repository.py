"""The queries analytics runs over profile's own tables (customers, features, events, settings, segments)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from retain_profile.models import CustomerRow, EventRow, FeaturesRow, SegmentRow, WorkspaceSettingsRow

_CHUNK = 2000


class AnalyticsRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def summaries(self, workspace_id: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(customer id, stored feature summary) of every customer not merged into another."""
        stmt = (
            select(CustomerRow.customer_id, FeaturesRow.summary)
            .join(FeaturesRow, FeaturesRow.customer_id == CustomerRow.customer_id, isouter=True)
            .where(CustomerRow.workspace_id == workspace_id, CustomerRow.merged_into.is_(None))
            .order_by(CustomerRow.customer_id)
            .execution_options(yield_per=_CHUNK)
        )
        result = await self.session.stream(stmt)
        async for customer_id, summary in result:
            yield customer_id, summary or {}

    async def lifecycle(self, workspace_id: str) -> dict[str, Any]:
        row = await self.session.get(WorkspaceSettingsRow, workspace_id)
        return dict(row.lifecycle) if row else {}

    async def segments(self, workspace_id: str) -> Sequence[SegmentRow]:
        stmt = select(SegmentRow).where(SegmentRow.workspace_id == workspace_id).order_by(SegmentRow.name)
        return (await self.session.scalars(stmt)).all()

    async def events_named(
        self, workspace_id: str, names: Sequence[str], *, since: datetime | None = None, until: datetime | None = None
    ) -> AsyncIterator[tuple[str, str, datetime, dict[str, Any]]]:
        """(customer id, event, timestamp, properties) of track events with one of `names`, oldest first."""
        stmt = select(EventRow.customer_id, EventRow.event, EventRow.timestamp, EventRow.properties).where(
            EventRow.workspace_id == workspace_id, EventRow.type == "track", EventRow.event.in_(list(names))
        )
        if since is not None:
            stmt = stmt.where(EventRow.timestamp >= since)
        if until is not None:
            stmt = stmt.where(EventRow.timestamp < until)
        result = await self.session.stream(stmt.order_by(EventRow.timestamp, EventRow.id).execution_options(
            yield_per=_CHUNK
        ))
        async for customer_id, event, timestamp, properties in result:
            yield customer_id, event, timestamp, properties or {}
