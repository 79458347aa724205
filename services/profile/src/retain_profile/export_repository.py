"""Workspace-wide order export for model training (scoring's `retain train`), a keyset page at a time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from retain_kit.errors import InvalidArgument
from retain_kit.protoconv import aware
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from retain_profile.domain.features import ORDER_EVENT, event_categories, order_discount, order_revenue
from retain_profile.models import EventRow

DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 10_000


@dataclass(frozen=True)
class Order:
    customer_id: str
    timestamp: datetime
    revenue: float
    discount: float
    category: str


def order_of(customer_id: str, timestamp: datetime, properties: dict[str, Any]) -> Order:
    """Revenue, discount and category read exactly as the live features read them."""
    categories = event_categories(ORDER_EVENT, properties)
    return Order(customer_id, aware(timestamp), order_revenue(properties), order_discount(properties),
                 categories[0] if categories else "")


def page_size_of(requested: int) -> int:
    if requested < 0 or requested > MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size must be within 0..{MAX_PAGE_SIZE}", field="page_size")
    return requested or DEFAULT_PAGE_SIZE


def after_id_of(token: str) -> int:
    """Page tokens are the last event id of the previous page: stable while new orders arrive."""
    if not token:
        return 0
    if not token.isdigit():
        raise InvalidArgument("page_token is not one this service issued", field="page_token")
    return int(token)


class OrderExportRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def orders(
        self,
        workspace_id: str,
        *,
        since: datetime | None,
        until: datetime | None,
        after_id: int,
        limit: int,
    ) -> tuple[list[Order], str]:
        """Orders with event id above `after_id`, by id; the next page token is empty on the last page."""
        if not workspace_id:
            raise InvalidArgument("workspace_id is required", field="workspace_id")
        if since is not None and until is not None and until <= since:
            raise InvalidArgument("until must be after since", field="until")
        stmt = select(EventRow.id, EventRow.customer_id, EventRow.timestamp, EventRow.properties).where(
            EventRow.workspace_id == workspace_id,
            EventRow.type == "track",
            EventRow.event == ORDER_EVENT,
            EventRow.id > after_id,
        )
        if since is not None:
            stmt = stmt.where(EventRow.timestamp >= since)
        if until is not None:
            stmt = stmt.where(EventRow.timestamp < until)
        rows = (await self.session.execute(stmt.order_by(EventRow.id).limit(limit + 1))).all()
        token = str(rows[limit - 1][0]) if len(rows) > limit else ""
        return [order_of(c, ts, props or {}) for _, c, ts, props in rows[:limit]], token
