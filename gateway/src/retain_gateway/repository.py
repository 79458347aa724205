"""Every gateway query lives here."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from retain_gateway.models import ApiKeyRow, WorkspaceRow


class AuthRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_workspace(self, workspace_id: str) -> WorkspaceRow | None:
        return await self.session.get(WorkspaceRow, workspace_id)

    async def add_workspace(self, row: WorkspaceRow) -> None:
        self.session.add(row)
        await self.session.flush()

    async def add_key(self, row: ApiKeyRow) -> None:
        self.session.add(row)
        await self.session.flush()

    async def get_key(self, key_id: str) -> ApiKeyRow | None:
        return await self.session.get(ApiKeyRow, key_id)

    async def get_key_by_hash(self, key_hash: str) -> ApiKeyRow | None:
        stmt = select(ApiKeyRow).where(ApiKeyRow.key_hash == key_hash)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def list_keys(self, workspace_id: str) -> list[ApiKeyRow]:
        stmt = select(ApiKeyRow).where(ApiKeyRow.workspace_id == workspace_id).order_by(ApiKeyRow.created_at)
        return list((await self.session.execute(stmt)).scalars())

    async def find_active_key(self, key_hash: str, *, now: datetime) -> ApiKeyRow | None:
        stmt = select(ApiKeyRow).where(
            ApiKeyRow.key_hash == key_hash,
            ApiKeyRow.revoked_at.is_(None),
            or_(ApiKeyRow.expires_at.is_(None), ApiKeyRow.expires_at > now),
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def touch_key(self, key_id: str, *, now: datetime) -> None:
        await self.session.execute(update(ApiKeyRow).where(ApiKeyRow.id == key_id).values(last_used_at=now))

    async def revoke_key(self, key_id: str, *, now: datetime) -> bool:
        """True when this call revoked it; False when it was already revoked."""
        stmt = (
            update(ApiKeyRow)
            .where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        result = await self.session.execute(stmt)
        return bool(getattr(result, "rowcount", 0))
