"""Every decision-service query lives here."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from retain_decision.domain import policies
from retain_decision.domain.offers import Offer, from_dict, to_dict
from retain_decision.domain.policies import GovernancePolicy
from retain_decision.models import (
    DeclineRow,
    HeldMessageRow,
    OfferRow,
    OfferVersionRow,
    PolicyRow,
    PolicyVersionRow,
)


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


class PolicyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def current(self, workspace_id: str) -> GovernancePolicy | None:
        row = await self.session.get(PolicyRow, workspace_id)
        return policies.from_dict(json.loads(row.spec)) if row is not None else None

    async def version(self, workspace_id: str, version: int) -> GovernancePolicy | None:
        row = await self.session.get(PolicyVersionRow, (workspace_id, version))
        return policies.from_dict(json.loads(row.spec)) if row is not None else None

    async def save(
        self, workspace_id: str, policy: GovernancePolicy, *, actor: str, now: datetime
    ) -> tuple[GovernancePolicy, int]:
        """Store the next version (row locked on PostgreSQL; the version key catches races elsewhere)."""
        stmt = select(PolicyRow).where(PolicyRow.workspace_id == workspace_id).with_for_update()
        row = (await self.session.execute(stmt)).scalar_one_or_none()
        previous = row.version if row is not None else 0
        stored = replace(policy, version=previous + 1, updated_by=actor, updated_at=now)
        spec = json.dumps(policies.to_dict(stored), sort_keys=True)
        self.session.add(
            PolicyVersionRow(workspace_id=workspace_id, version=stored.version, spec=spec, actor=actor, created_at=now)
        )
        if row is None:
            self.session.add(
                PolicyRow(workspace_id=workspace_id, version=stored.version, spec=spec, updated_by=actor,
                          updated_at=now)
            )
        else:
            row.version, row.spec, row.updated_by, row.updated_at = stored.version, spec, actor, now
        await self.session.flush()
        return stored, previous


class DeclineRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, workspace_id: str, *, customer_id: str, offer_id: str, occurred_at: datetime) -> None:
        self.session.add(
            DeclineRow(workspace_id=workspace_id, customer_id=customer_id, offer_id=offer_id, occurred_at=occurred_at)
        )
        await self.session.flush()

    async def since(self, workspace_id: str, customer_id: str, *, since: datetime) -> dict[str, list[datetime]]:
        stmt = select(DeclineRow.offer_id, DeclineRow.occurred_at).where(
            DeclineRow.workspace_id == workspace_id,
            DeclineRow.customer_id == customer_id,
            DeclineRow.occurred_at >= since,
        )
        out: dict[str, list[datetime]] = {}
        for offer_id, at in (await self.session.execute(stmt)).all():
            out.setdefault(offer_id, []).append(at if at.tzinfo else at.replace(tzinfo=UTC))
        return out


class HoldRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def hold(
        self,
        workspace_id: str,
        *,
        hold_id: str,
        idempotency_key: str,
        request: dict[str, Any],
        deliver_after: datetime,
        decision_id: str,
        now: datetime,
    ) -> HeldMessageRow:
        """Keep the send until `deliver_after`; a second hold of the same key returns the first."""
        stmt = select(HeldMessageRow).where(
            HeldMessageRow.workspace_id == workspace_id, HeldMessageRow.idempotency_key == idempotency_key
        )
        existing = (await self.session.execute(stmt)).scalar_one_or_none()
        if existing is not None:
            if existing.status in ("held", "releasing"):
                existing.deliver_after = deliver_after
                existing.updated_at = now
            return existing
        row = HeldMessageRow(
            hold_id=hold_id,
            workspace_id=workspace_id,
            idempotency_key=idempotency_key,
            request=json.dumps(request, sort_keys=True, ensure_ascii=False, default=str),
            deliver_after=deliver_after,
            status="held",
            decision_id=decision_id,
            created_at=now,
            updated_at=now,
        )
        self.session.add(row)
        await self.session.flush()
        return row

    async def claim_due(self, *, now: datetime, limit: int) -> list[HeldMessageRow]:
        """Due holds, locked so that another replica's release loop skips them (PostgreSQL)."""
        stmt = (
            select(HeldMessageRow)
            .where(HeldMessageRow.status == "held", HeldMessageRow.deliver_after <= now)
            .order_by(HeldMessageRow.deliver_after)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def get(self, hold_id: str) -> HeldMessageRow | None:
        return await self.session.get(HeldMessageRow, hold_id)
