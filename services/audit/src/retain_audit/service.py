"""Audit use cases: append (durable before acknowledged), query, verify, checkpoints, erasure."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from retain_kit.errors import InvalidArgument
from retain_kit.protoconv import utcnow
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from retain_audit.domain.chain import ChainVerifier, Verification
from retain_audit.domain.checkpoint import Checkpoint, Signer
from retain_audit.domain.privacy import PREFIX, Vault, has_personal_data
from retain_audit.models import AuditRecordRow, DataKeyRow
from retain_audit.repository import AuditRepository, NewRecord, RecordFilter, link, to_checkpoint, to_entry

MAX_PAGE = 500
MAX_BATCH = 5000
_SEALED_MARK = '"' + PREFIX


@dataclass(frozen=True)
class ReadRecord:
    """A stored record as an auditor reads it: sealed personal fields opened, or "[erased]"."""

    row: AuditRecordRow
    payload: dict[str, Any]
    erased: bool


@dataclass(frozen=True)
class _Linked:
    out: list[ReadRecord]  # one per record asked for, stored earlier or new
    fresh: list[AuditRecordRow]  # the new links, to insert
    head: tuple[int, str]  # seq and hash after them
    checkpoints: list[Checkpoint]  # signed heads that fell due among them


@dataclass(frozen=True)
class Erasure:
    key_destroyed: bool
    record: ReadRecord


class AuditLog:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        signer: Signer,
        vault: Vault,
        checkpoint_every: int = 1000,
    ) -> None:
        self.sessions = sessions
        self.signer = signer
        self.vault = vault
        self.checkpoint_every = checkpoint_every
        # SQLite has no row locks: serialise appends within the process; PostgreSQL locks the head row.
        self._lock = asyncio.Lock()
        # Group commit: appends that arrive while a transaction is running share the next one.
        self._pending: dict[str, list[tuple[list[NewRecord], asyncio.Future[list[ReadRecord]]]]] = {}
        self._flushers: dict[str, asyncio.Task[None]] = {}
        # The head this process last committed, per workspace: a hint for the optimistic append, which checks
        # it in the same statement that moves it, so a stale hint costs a retry and never a wrong link.
        self._heads: dict[str, tuple[int, str]] = {}

    @property
    def trusted_keys(self) -> dict[str, Ed25519PublicKey]:
        return {self.signer.key_id: self.signer.public}

    async def append(self, workspace_id: str, record: NewRecord) -> ReadRecord:
        (row,) = await self.append_batch(workspace_id, [record])
        return row

    async def append_batch(self, workspace_id: str, records: Sequence[NewRecord]) -> list[ReadRecord]:
        """All records in one transaction under one head lock; returned only after the commit."""
        if not workspace_id:
            raise InvalidArgument("workspace_id is required", field="workspace_id")
        if len(records) > MAX_BATCH:
            raise InvalidArgument(f"at most {MAX_BATCH} records per batch", field="records")
        single = len(records) == 1
        for i, record in enumerate(records):
            if not record.kind:
                field = "record.kind" if single else f"records[{i}].kind"
                raise InvalidArgument("record.kind is required", field=field)
        if not records:
            return []
        future: asyncio.Future[list[ReadRecord]] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(workspace_id, []).append((list(records), future))
        if workspace_id not in self._flushers:
            self._flushers[workspace_id] = asyncio.create_task(self._flush(workspace_id))
        # shield: a caller that gives up must not cancel the transaction others are waiting on
        return await asyncio.shield(future)

    async def _flush(self, workspace_id: str) -> None:
        """Commit waiting appends in groups; each caller is answered only after its group is durable."""
        try:
            while self._pending.get(workspace_id):
                queue = self._pending[workspace_id]
                group: list[tuple[list[NewRecord], asyncio.Future[list[ReadRecord]]]] = []
                size = 0
                while queue and (not group or size + len(queue[0][0]) <= MAX_BATCH):
                    item = queue.pop(0)
                    group.append(item)
                    size += len(item[0])
                try:
                    rows = await self._commit(workspace_id, [r for records, _ in group for r in records])
                except Exception as exc:
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                start = 0
                for records, future in group:
                    if not future.done():
                        future.set_result(rows[start : start + len(records)])
                    start += len(records)
        finally:
            del self._flushers[workspace_id]
            if not self._pending.get(workspace_id):
                self._pending.pop(workspace_id, None)

    async def _commit(self, workspace_id: str, records: Sequence[NewRecord]) -> list[ReadRecord]:
        async with self._lock:
            head = self._heads.get(workspace_id)
            if head is not None:
                rows = await self._append_optimistic(workspace_id, records, head)
                if rows is not None:
                    return rows
            for _ in range(5):
                async with self.sessions() as session:
                    try:
                        rows = await self._append(AuditRepository(session), workspace_id, records)
                        await session.commit()
                        return rows
                    except IntegrityError:
                        # Another replica created the head or took the seq first: retry on the new head.
                        await session.rollback()
            raise InvalidArgument("could not append after retries", field="record")

    async def _append_optimistic(
        self, workspace_id: str, records: Sequence[NewRecord], head: tuple[int, str]
    ) -> list[ReadRecord] | None:
        """Two statements instead of five: move the head from where this process left it (the UPDATE both
        checks and locks it) and insert. No idempotency lookup first: a key already stored fails the insert on
        its unique constraint. None when the head moved or a key repeats; the locking path then decides."""
        async with self.sessions() as session:
            repo = AuditRepository(session)
            try:
                data_keys = await self._data_keys(repo, workspace_id, records)
                linked = self._link(workspace_id, records, head=head, stored={}, data_keys=data_keys)
                # The head first, as on the locking path: a new data key flushed before it could wait on another
                # writer's uncommitted key while that writer waits on our head, a deadlock.
                with session.sync_session.no_autoflush:
                    moved = await repo.advance_head(workspace_id, old=head, new=linked.head)
                if not moved:
                    await session.rollback()
                    self._heads.pop(workspace_id, None)
                    return None
                await repo.insert_records(linked.fresh)
                for checkpoint in linked.checkpoints:
                    repo.add_checkpoint(checkpoint)
                await session.commit()
            except IntegrityError:
                await session.rollback()
                self._heads.pop(workspace_id, None)
                return None
        self._heads[workspace_id] = linked.head
        return linked.out

    async def _append(
        self, repo: AuditRepository, workspace_id: str, records: Sequence[NewRecord]
    ) -> list[ReadRecord]:
        """The locking append: head row locked, stored idempotency keys looked up first."""
        head = await repo.lock_head(workspace_id)
        keyed = [r.idempotency_key for r in records if r.idempotency_key]
        stored = await repo.find_by_idempotency_keys(workspace_id, keyed) if keyed else {}
        data_keys = await self._data_keys(repo, workspace_id, records)
        linked = self._link(workspace_id, records, head=(head.seq, head.hash), stored=stored, data_keys=data_keys)
        if linked.fresh:
            await repo.insert_records(linked.fresh)
            head.seq, head.hash = linked.head
        for checkpoint in linked.checkpoints:
            repo.add_checkpoint(checkpoint)
        await repo.session.flush()
        # A hint only (see _heads): set before the caller's commit, and checked by whoever uses it next.
        self._heads[workspace_id] = linked.head
        return linked.out

    def _link(
        self,
        workspace_id: str,
        records: Sequence[NewRecord],
        *,
        head: tuple[int, str],
        stored: dict[str, AuditRecordRow],
        data_keys: dict[str, tuple[str, bytes]],
    ) -> _Linked:
        """Chain `records` onto `head`: seal personal data, hash each link, sign the checkpoints that fall due.
        A record whose idempotency key is in `stored` (or earlier in the batch) is answered with that record."""
        now = utcnow()
        out: list[ReadRecord] = []
        fresh: list[AuditRecordRow] = []
        checkpoints: list[Checkpoint] = []
        seq, prev = head
        for record in records:
            if record.idempotency_key and record.idempotency_key in stored:
                out.append(self._read(stored[record.idempotency_key], data_keys))
                continue
            payload = dict(record.payload or {})
            if record.customer_id in data_keys and has_personal_data(payload):
                key_id, data_key = data_keys[record.customer_id]
                payload = self.vault.seal(
                    payload, workspace_id=workspace_id, customer_id=record.customer_id, key_id=key_id,
                    data_key=data_key,
                )
            seq += 1
            row = link(workspace_id, record, seq=seq, prev_hash=prev, payload=payload, now=now)
            prev = row.hash
            out.append(ReadRecord(row, dict(record.payload or {}), False))
            fresh.append(row)
            if record.idempotency_key:
                stored[record.idempotency_key] = row
            if self.checkpoint_every and seq % self.checkpoint_every == 0:
                checkpoints.append(self._sign(workspace_id, seq, row.hash))
        return _Linked(out, fresh, (seq, prev), checkpoints)

    async def _data_keys(
        self, repo: AuditRepository, workspace_id: str, records: Sequence[NewRecord]
    ) -> dict[str, tuple[str, bytes]]:
        """Open (or create) the data key of every customer whose record carries personal data."""
        needed = {r.customer_id for r in records if r.customer_id and r.payload and has_personal_data(r.payload)}
        if not needed:
            return {}
        existing = await repo.data_keys(workspace_id, needed)
        keys: dict[str, tuple[str, bytes]] = {}
        for customer_id in needed:
            row = existing.get(customer_id)
            if row is None:
                key_id, data_key, wrapped = self.vault.new_key(workspace_id, customer_id)
                repo.add_data_key(
                    DataKeyRow(
                        workspace_id=workspace_id, customer_id=customer_id, key_id=key_id, wrapped_key=wrapped,
                        created_at=utcnow(),
                    )
                )
                keys[customer_id] = (key_id, data_key)
            else:
                keys[customer_id] = (row.key_id, self.vault.open_key(workspace_id, customer_id, row.wrapped_key))
        return keys

    def _sign(self, workspace_id: str, seq: int, head_hash: str) -> Checkpoint:
        return self.signer.sign(workspace_id=workspace_id, seq=seq, head_hash=head_hash, signed_at=utcnow())

    async def list(self, flt: RecordFilter, *, page_size: int, page_token: str) -> tuple[list[ReadRecord], str]:
        if not flt.workspace_id:
            raise InvalidArgument("workspace_id is required", field="workspace_id")
        size = min(max(page_size or 100, 1), MAX_PAGE)
        try:
            after = int(page_token) if page_token else 0
        except ValueError as exc:
            raise InvalidArgument("page_token is not valid", field="page_token") from exc
        if after < 0:
            raise InvalidArgument("page_token is not valid", field="page_token")
        async with self.sessions() as session:
            repo = AuditRepository(session)
            rows = await repo.list(flt, after_seq=after, limit=size + 1)
            next_token = str(rows[size - 1].seq) if len(rows) > size else ""
            rows = rows[:size]
            sealed = {r.customer_id for r in rows if _SEALED_MARK in r.payload}
            key_rows = await repo.data_keys(flt.workspace_id, sealed) if sealed else {}
        keys = {
            cid: (row.key_id, self.vault.open_key(flt.workspace_id, cid, row.wrapped_key))
            for cid, row in key_rows.items()
        }
        return [self._read(row, keys) for row in rows], next_token

    def _read(self, row: AuditRecordRow, keys: dict[str, tuple[str, bytes]]) -> ReadRecord:
        payload = json.loads(row.payload)
        if _SEALED_MARK not in row.payload:
            return ReadRecord(row, payload, False)
        opened, erased = self.vault.unseal(
            payload, workspace_id=row.workspace_id, customer_id=row.customer_id, key=keys.get(row.customer_id)
        )
        return ReadRecord(row, opened, erased)

    async def verify(self, workspace_id: str) -> Verification:
        if not workspace_id:
            raise InvalidArgument("workspace_id is required", field="workspace_id")
        async with self.sessions() as session:
            repo = AuditRepository(session)
            # Checkpoints first: any written later pin records this walk may not reach.
            checkpoints = [to_checkpoint(row) for row in await repo.checkpoints(workspace_id)]
            walker = ChainVerifier(checkpoints, self.trusted_keys)
            async for row in repo.chain(workspace_id):
                if not walker.feed(to_entry(row), row.hash):
                    break
        return walker.result()

    async def checkpoint(self, workspace_id: str) -> Checkpoint | None:
        """Signs the current head (or returns the checkpoint already there); None for an empty chain."""
        if not workspace_id:
            raise InvalidArgument("workspace_id is required", field="workspace_id")
        async with self._lock, self.sessions() as session:
            repo = AuditRepository(session)
            head = await repo.lock_head(workspace_id)
            if head.seq == 0:
                await session.rollback()
                return None
            existing = await repo.checkpoint_at(workspace_id, head.seq)
            if existing is not None:
                found = to_checkpoint(existing)
                await session.rollback()
                return found
            checkpoint = self._sign(workspace_id, head.seq, head.hash)
            repo.add_checkpoint(checkpoint)
            await session.commit()
            return checkpoint

    async def list_checkpoints(
        self, workspace_id: str, *, page_size: int, page_token: str
    ) -> tuple[Sequence[Checkpoint], str]:
        if not workspace_id:
            raise InvalidArgument("workspace_id is required", field="workspace_id")
        size = min(max(page_size or 100, 1), MAX_PAGE)
        try:
            after = int(page_token) if page_token else 0
        except ValueError as exc:
            raise InvalidArgument("page_token is not valid", field="page_token") from exc
        async with self.sessions() as session:
            rows = await AuditRepository(session).checkpoints(workspace_id, after_seq=after, limit=size + 1)
        token = str(rows[size - 1].seq) if len(rows) > size else ""
        return [to_checkpoint(r) for r in rows[:size]], token

    async def checkpoint_due(self) -> int:
        """Signs every workspace with records newer than its last checkpoint (the timer's job)."""
        async with self.sessions() as session:
            due = await AuditRepository(session).unsigned_workspaces()
        for workspace_id in due:
            await self.checkpoint(workspace_id)
        return len(due)

    async def erase_customer(self, workspace_id: str, customer_id: str, *, actor: str, reason: str) -> Erasure:
        """Destroys the customer's data key and records the erasure in the chain, in one transaction."""
        if not workspace_id:
            raise InvalidArgument("workspace_id is required", field="workspace_id")
        if not customer_id:
            raise InvalidArgument("customer_id is required", field="customer_id")
        async with self._lock:
            async with self.sessions() as session:
                repo = AuditRepository(session)
                await repo.lock_head(workspace_id)
                destroyed = await repo.delete_data_key(workspace_id, customer_id)
                record = NewRecord(
                    kind="privacy",
                    customer_id=customer_id,
                    outcome="erased",
                    actor=actor,
                    # No personal data here: the erasure record must stay readable after the erasure.
                    payload={"request": "erasure", "reason_code": reason[:200], "key_destroyed": destroyed},
                )
                (row,) = await self._append(repo, workspace_id, [record])
                await session.commit()
        return Erasure(destroyed, row)
