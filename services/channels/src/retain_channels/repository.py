"""Every channels query lives here."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from retain_channels.models import MessageRow, OutboxRow, SentLogRow

STAGE_SEND = "send"
STAGE_AUDIT = "audit"


def _rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


class ChannelRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def find_by_key(self, workspace_id: str, key: str) -> MessageRow | None:
        stmt = select(MessageRow).where(MessageRow.workspace_id == workspace_id, MessageRow.idempotency_key == key)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get(self, message_id: str, *, workspace_id: str | None = None) -> MessageRow | None:
        stmt = select(MessageRow).where(MessageRow.message_id == message_id)
        if workspace_id is not None:
            stmt = stmt.where(MessageRow.workspace_id == workspace_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def find_by_provider_message_id(
        self, workspace_id: str, provider_message_id: str, *, provider: str = ""
    ) -> MessageRow | None:
        stmt = select(MessageRow).where(
            MessageRow.workspace_id == workspace_id, MessageRow.provider_message_id == provider_message_id
        )
        if provider:
            stmt = stmt.where(MessageRow.provider == provider)
        return (await self.session.execute(stmt.limit(1))).scalar_one_or_none()

    async def list_for_customer(
        self, workspace_id: str, customer_id: str, *, before: tuple[datetime, str] | None, limit: int
    ) -> list[MessageRow]:
        """Newest first; `before` is the (created_at, message_id) of the last row already returned."""
        stmt = select(MessageRow).where(MessageRow.workspace_id == workspace_id, MessageRow.customer_id == customer_id)
        if before is not None:
            created, message_id = before
            stmt = stmt.where(
                or_(
                    MessageRow.created_at < created,
                    and_(MessageRow.created_at == created, MessageRow.message_id < message_id),
                )
            )
        stmt = stmt.order_by(MessageRow.created_at.desc(), MessageRow.message_id.desc()).limit(limit)
        return list((await self.session.execute(stmt)).scalars())

    async def add_message(self, row: MessageRow, *, claim_token: str | None, claimed_until: datetime | None) -> None:
        """The message and its outbox row, in the caller's transaction (the outbox half of the pattern)."""
        self.session.add(row)
        self.session.add(
            OutboxRow(
                message_id=row.message_id,
                workspace_id=row.workspace_id,
                stage=STAGE_SEND,
                available_at=row.created_at,
                claimed_until=claimed_until,
                claim_token=claim_token,
                created_at=row.created_at,
            )
        )
        await self.session.flush()

    async def due(self, now: datetime, *, limit: int) -> list[OutboxRow]:
        stmt = (
            select(OutboxRow)
            .where(
                OutboxRow.available_at <= now,
                or_(OutboxRow.claimed_until.is_(None), OutboxRow.claimed_until < now),
            )
            .order_by(OutboxRow.available_at)
            .limit(limit)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def outbox_row(self, message_id: str) -> OutboxRow | None:
        return await self.session.get(OutboxRow, message_id)

    async def claim(self, message_id: str, *, token: str, now: datetime, until: datetime) -> bool:
        """Take the row if it is due and nobody holds a live lease; a conditional UPDATE so that
        replicas racing for the same row cannot both win."""
        stmt = (
            update(OutboxRow)
            .where(
                OutboxRow.message_id == message_id,
                OutboxRow.available_at <= now,
                or_(OutboxRow.claimed_until.is_(None), OutboxRow.claimed_until < now),
            )
            .values(claimed_until=until, claim_token=token)
        )
        return _rowcount(await self.session.execute(stmt)) == 1

    async def begin_attempt(self, message_id: str, *, token: str, now: datetime, until: datetime) -> int | None:
        """Renew the lease and count the attempt before the provider is called; None if the lease was lost.
        The first attempt also stamps provider_called_at (the commit lands just before the call)."""
        renewed = await self.session.execute(
            update(OutboxRow)
            .where(OutboxRow.message_id == message_id, OutboxRow.claim_token == token)
            .values(claimed_until=until)
        )
        if _rowcount(renewed) != 1:
            return None
        await self.session.execute(
            update(MessageRow)
            .where(MessageRow.message_id == message_id)
            .values(
                attempts=MessageRow.attempts + 1,
                updated_at=now,
                provider_called_at=func.coalesce(MessageRow.provider_called_at, now),
            )
        )
        stmt = select(MessageRow.attempts).where(MessageRow.message_id == message_id)
        return int((await self.session.execute(stmt)).scalar_one())

    async def release(self, message_id: str, *, token: str, available_at: datetime | None = None) -> None:
        values: dict[str, Any] = {"claimed_until": None, "claim_token": None}
        if available_at is not None:
            values["available_at"] = available_at
        await self.session.execute(
            update(OutboxRow).where(OutboxRow.message_id == message_id, OutboxRow.claim_token == token).values(**values)
        )

    async def note_error(self, message_id: str, *, error: str, now: datetime) -> None:
        await self.session.execute(
            update(MessageRow).where(MessageRow.message_id == message_id).values(error=error, updated_at=now)
        )

    async def settle(
        self, message_id: str, *, token: str, status: str, provider_message_id: str, error: str, now: datetime
    ) -> bool:
        """Record the send's outcome and move the outbox row to the audit stage, atomically."""
        moved = await self.session.execute(
            update(OutboxRow)
            .where(OutboxRow.message_id == message_id, OutboxRow.claim_token == token)
            .values(stage=STAGE_AUDIT)
        )
        if _rowcount(moved) != 1:
            return False
        await self.session.execute(
            update(MessageRow)
            .where(MessageRow.message_id == message_id)
            .values(status=status, provider_message_id=provider_message_id, error=error, updated_at=now)
        )
        return True

    async def complete(self, message_id: str, *, token: str) -> None:
        await self.session.execute(
            delete(OutboxRow).where(OutboxRow.message_id == message_id, OutboxRow.claim_token == token)
        )

    async def set_status(self, message_id: str, *, status: str, error: str, now: datetime) -> None:
        await self.session.execute(
            update(MessageRow)
            .where(MessageRow.message_id == message_id)
            .values(status=status, error=error, updated_at=now)
        )

    async def find_sent(self, workspace_id: str, idempotency_key: str) -> SentLogRow | None:
        stmt = select(SentLogRow).where(
            SentLogRow.workspace_id == workspace_id, SentLogRow.idempotency_key == idempotency_key
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def add_sent(self, row: SentLogRow) -> None:
        self.session.add(row)
        await self.session.flush()

    async def sent_log(self, workspace_id: str) -> list[SentLogRow]:
        stmt = select(SentLogRow).where(SentLogRow.workspace_id == workspace_id).order_by(SentLogRow.created_at)
        return list((await self.session.execute(stmt)).scalars())
