"""Audit use cases: append (durable before acknowledged), query, verify."""

from __future__ import annotations

import asyncio

from retain_kit.errors import InvalidArgument
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from retain_audit.domain.chain import Verification, verify
from retain_audit.models import AuditRecordRow
from retain_audit.repository import AuditRepository, NewRecord, RecordFilter, to_entry

MAX_PAGE = 500


class AuditLog:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        # SQLite has no row locks: serialise appends within the process; PostgreSQL locks the head row.
        self._lock = asyncio.Lock()

    async def append(self, workspace_id: str, record: NewRecord) -> AuditRecordRow:
        if not workspace_id:
            raise InvalidArgument("workspace_id is required", field="workspace_id")
        if not record.kind:
            raise InvalidArgument("record.kind is required", field="record.kind")
        async with self._lock:
            for _ in range(5):
                async with self.sessions() as session:
                    repo = AuditRepository(session)
                    if record.idempotency_key:
                        existing = await repo.find_by_idempotency_key(workspace_id, record.idempotency_key)
                        if existing is not None:
                            return existing
                    try:
                        row = await repo.append(workspace_id, record)
                        await session.commit()
                        return row
                    except IntegrityError:
                        # Another replica created the head or took the seq first: retry on the new head.
                        await session.rollback()
            raise InvalidArgument("could not append after retries", field="record")

    async def list(self, flt: RecordFilter, *, page_size: int, page_token: str) -> tuple[list[AuditRecordRow], str]:
        size = min(max(page_size or 100, 1), MAX_PAGE)
        try:
            after = int(page_token) if page_token else 0
        except ValueError as exc:
            raise InvalidArgument("page_token is not valid", field="page_token") from exc
        async with self.sessions() as session:
            rows = await AuditRepository(session).list(flt, after_seq=after, limit=size + 1)
        next_token = str(rows[size - 1].seq) if len(rows) > size else ""
        return rows[:size], next_token

    async def verify(self, workspace_id: str) -> Verification:
        async with self.sessions() as session:
            entries = [(to_entry(row), row.hash) async for row in AuditRepository(session).chain(workspace_id)]
        return verify(entries)
