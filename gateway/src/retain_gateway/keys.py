"""Workspace and API key use cases (called by the gateway per request and by the `retain` CLI)."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Iterable
from datetime import datetime

from retain_kit.errors import InvalidArgument, NotFound
from retain_kit.protoconv import aware, utcnow
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from retain_gateway.domain import apikey
from retain_gateway.domain.apikey import ApiKeyInfo, Principal, Workspace
from retain_gateway.domain.authcache import AuthCache
from retain_gateway.models import ApiKeyRow, WorkspaceRow
from retain_gateway.repository import AuthRepository
from retain_gateway.roles import parse_roles

Sessions = async_sessionmaker[AsyncSession]


def _workspace(row: WorkspaceRow) -> Workspace:
    return Workspace(id=row.id, name=row.name, created_at=aware(row.created_at))


def _key_info(row: ApiKeyRow) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=row.id,
        workspace_id=row.workspace_id,
        name=row.name,
        roles=frozenset(r for r in row.roles.split(",") if r),
        prefix=apikey.display(row.prefix),
        created_at=aware(row.created_at),
        expires_at=aware(row.expires_at) if row.expires_at else None,
        revoked_at=aware(row.revoked_at) if row.revoked_at else None,
        last_used_at=aware(row.last_used_at) if row.last_used_at else None,
    )


async def create_workspace(sessions: Sessions, *, workspace_id: str, name: str) -> Workspace:
    """Idempotent: an existing workspace is returned unchanged."""
    if not apikey.valid_workspace_id(workspace_id):
        raise InvalidArgument(
            "workspace id must look like ws_<slug> (lower-case letters, digits, _ or -)",
            field="workspace_id",
        )
    async with sessions() as session:
        repo = AuthRepository(session)
        existing = await repo.get_workspace(workspace_id)
        if existing is not None:
            return _workspace(existing)
        row = WorkspaceRow(id=workspace_id, name=name or workspace_id, created_at=utcnow())
        try:
            await repo.add_workspace(row)
            await session.commit()
        except IntegrityError:
            # Lost a race with a concurrent create: the other one's row is the answer.
            await session.rollback()
            raced = await AuthRepository(session).get_workspace(workspace_id)
            if raced is None:
                raise
            return _workspace(raced)
        return _workspace(row)


async def issue_key(
    sessions: Sessions,
    *,
    workspace_id: str,
    roles: Iterable[str],
    name: str,
    expires_at: datetime | None = None,
) -> str:
    """Creates a key and returns its plain text: the only time it is ever available."""
    try:
        parsed = parse_roles(roles)
    except ValueError as exc:
        raise InvalidArgument(str(exc), field="roles") from None
    if not parsed:
        raise InvalidArgument("a key needs at least one role", field="roles")
    if expires_at is not None and aware(expires_at) <= utcnow():
        raise InvalidArgument("expires_at is in the past", field="expires_at")
    new = apikey.generate()
    async with sessions() as session:
        repo = AuthRepository(session)
        if await repo.get_workspace(workspace_id) is None:
            raise NotFound(f"workspace {workspace_id} does not exist", field="workspace_id")
        await repo.add_key(
            ApiKeyRow(
                id="key_" + uuid.uuid4().hex[:16],
                workspace_id=workspace_id,
                name=name,
                roles=",".join(sorted(parsed)),
                key_hash=new.key_hash,
                prefix=new.prefix,
                created_at=utcnow(),
                expires_at=aware(expires_at) if expires_at else None,
            )
        )
        await session.commit()
    return new.plaintext


async def revoke_key(
    sessions: Sessions,
    *,
    key_id: str,
    workspace_id: str | None = None,
    cache: AuthCache | None = None,
) -> bool:
    """Revokes a key by id (or by its plain text); True when this call revoked it.

    Other replicas stop honouring it within their auth cache TTL.
    """
    async with sessions() as session:
        repo = AuthRepository(session)
        if apikey.parse(key_id) is not None:
            row = await repo.get_key_by_hash(apikey.hash_key(key_id.strip()))
        else:
            row = await repo.get_key(key_id)
        if row is None or (workspace_id is not None and row.workspace_id != workspace_id):
            raise NotFound("api key does not exist", field="key_id")
        revoked = await repo.revoke_key(row.id, now=utcnow())
        await session.commit()
    if cache is not None:
        cache.invalidate_key(row.id)
    return revoked


async def list_keys(sessions: Sessions, *, workspace_id: str) -> list[ApiKeyInfo]:
    async with sessions() as session:
        return [_key_info(row) for row in await AuthRepository(session).list_keys(workspace_id)]


async def authenticate(sessions: Sessions, key: str, *, cache: AuthCache | None = None) -> Principal | None:
    """The principal behind a key, or None when it is malformed, unknown, revoked or expired."""
    if apikey.parse(key) is None:
        return None
    key_hash = apikey.hash_key(key.strip())
    if cache is None or not cache.enabled:
        return await _look_up(sessions, key_hash, cache=None)
    if (hit := cache.get(key_hash)) is not None:
        return hit
    # Requests in flight with the same uncached key share one lookup. It runs as a task of its own, so a
    # request that goes away (client disconnect) does not cancel it for the others.
    lookup = cache.pending.get(key_hash)
    if lookup is None:
        lookup = asyncio.ensure_future(_look_up(sessions, key_hash, cache=cache))
        cache.pending[key_hash] = lookup
        lookup.add_done_callback(functools.partial(_lookup_done, cache, key_hash))
    return await asyncio.shield(lookup)


def _lookup_done(cache: AuthCache, key_hash: str, lookup: asyncio.Future[Principal | None]) -> None:
    if cache.pending.get(key_hash) is lookup:
        del cache.pending[key_hash]
    if not lookup.cancelled():
        lookup.exception()  # retrieved here too: every request waiting for it may have gone


async def _look_up(sessions: Sessions, key_hash: str, *, cache: AuthCache | None) -> Principal | None:
    generation = cache.generation if cache is not None else None
    now = utcnow()
    async with sessions() as session:
        repo = AuthRepository(session)
        row = await repo.find_active_key(key_hash, now=now)
        if row is None:
            return None
        principal = Principal(
            workspace_id=row.workspace_id,
            key_id=row.id,
            roles=frozenset(r for r in row.roles.split(",") if r),
        )
        expires_at = aware(row.expires_at) if row.expires_at else None
        # Written only on a cache miss, so at most once per TTL per key per replica.
        await repo.touch_key(row.id, now=now)
        await session.commit()
    if cache is not None:
        cache.put(key_hash, principal, expires_at=expires_at, generation=generation)
    return principal
