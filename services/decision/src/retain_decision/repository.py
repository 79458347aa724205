"""Every decision-service query lives here."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from retain_decision.domain.offers import Offer, from_dict, to_dict
from retain_decision.models import OfferRow, OfferVersionRow


def _dump(offer: Offer) -> str:
    return json.dumps(to_dict(offer), sort_keys=True, ensure_ascii=False)


class OfferRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def count(self, workspace_id: str) -> int:
        stmt = select(func.count()).select_from(OfferRow).where(OfferRow.workspace_id == workspace_id)
        return int((await self.session.execute(stmt)).scalar_one())

    async def list_offers(self, workspace_id: str, *, include_inactive: bool) -> list[Offer]:
        stmt = select(OfferRow).where(OfferRow.workspace_id == workspace_id)
        if not include_inactive:
            stmt = stmt.where(OfferRow.active.is_(True))
        stmt = stmt.order_by(OfferRow.offer_id)
        return [from_dict(json.loads(row.spec)) for row in (await self.session.execute(stmt)).scalars()]

    async def get(self, workspace_id: str, offer_id: str) -> Offer | None:
        row = await self.session.get(OfferRow, (workspace_id, offer_id))
        return from_dict(json.loads(row.spec)) if row is not None else None

    async def versions(self, workspace_id: str, offer_id: str) -> list[Offer]:
        stmt = (
            select(OfferVersionRow)
            .where(OfferVersionRow.workspace_id == workspace_id, OfferVersionRow.offer_id == offer_id)
            .order_by(OfferVersionRow.version)
        )
        return [from_dict(json.loads(row.spec)) for row in (await self.session.execute(stmt)).scalars()]

    async def save(self, workspace_id: str, offer: Offer, *, actor: str, now: datetime) -> tuple[Offer, int]:
        """Store `offer` as the next version; returns it (with its version) and the version it replaced.

        The current row is locked where the database can (PostgreSQL); elsewhere the version
        table's primary key turns a lost race into an IntegrityError the caller retries.
        """
        stmt = (
            select(OfferRow)
            .where(OfferRow.workspace_id == workspace_id, OfferRow.offer_id == offer.offer_id)
            .with_for_update()
        )
        row = (await self.session.execute(stmt)).scalar_one_or_none()
        previous = row.version if row is not None else 0
        stored = replace(offer, version=previous + 1)
        spec = _dump(stored)
        self.session.add(
            OfferVersionRow(
                workspace_id=workspace_id,
                offer_id=offer.offer_id,
                version=stored.version,
                spec=spec,
                actor=actor,
                created_at=now,
            )
        )
        if row is None:
            self.session.add(
                OfferRow(
                    workspace_id=workspace_id,
                    offer_id=offer.offer_id,
                    version=stored.version,
                    active=stored.active,
                    spec=spec,
                    updated_by=actor,
                    updated_at=now,
                )
            )
        else:
            row.version = stored.version
            row.active = stored.active
            row.spec = spec
            row.updated_by = actor
            row.updated_at = now
        await self.session.flush()
        return stored, previous

    async def save_all(
        self, workspace_id: str, offers: Sequence[Offer], *, actor: str, now: datetime
    ) -> list[Offer]:
        return [(await self.save(workspace_id, offer, actor=actor, now=now))[0] for offer in offers]
