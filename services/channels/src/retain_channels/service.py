"""Channels use cases: dispatch through the outbox, deliver with retries, track delivery status.

The order that makes it safe: the message and its outbox row commit together; the `queued` audit
record is durable before any provider call; the provider gets the idempotency key on every attempt;
the outcome and the move to the outbox's audit stage commit together; the outbox row goes only once
the outcome's audit record is durable. A crash anywhere leaves an outbox row the worker finishes.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from retain_kit.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from retain_kit.protoconv import aware, utcnow
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from retain_channels.domain.dispatch import Draft, validate
from retain_channels.domain.retry import RetryPolicy
from retain_channels.domain.status import EVENT_STATUSES, apply_event
from retain_channels.domain.templates import render_message
from retain_channels.faults import crash_point
from retain_channels.models import MessageRow
from retain_channels.ports import AuditEntry, AuditSink
from retain_channels.providers.base import (
    DeliveryEvent,
    OutboundMessage,
    PermanentProviderError,
    TransientProviderError,
)
from retain_channels.providers.registry import ChannelProviders
from retain_channels.repository import STAGE_SEND, ChannelRepository

log = logging.getLogger(__name__)

MAX_PAGE = 200


@dataclass(frozen=True)
class DeliveryOptions:
    lease_seconds: float = 60.0
    inline_retry_max_delay_seconds: float = 2.0
    audit_body_preview_chars: int = 200


class Channels:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        audit: AuditSink,
        providers: ChannelProviders,
        policy: RetryPolicy,
        options: DeliveryOptions | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.sessions = sessions
        self.audit = audit
        self.providers = providers
        self.policy = policy
        self.options = options or DeliveryOptions()
        self._sleep = sleep
        self._rand = rand

    # -- dispatch -------------------------------------------------------------------------------

    async def dispatch(self, workspace_id: str, draft: Draft) -> tuple[MessageRow, bool]:
        """Store, audit and send once per idempotency key; returns (message, duplicate)."""
        # The dispatch-to-provider latency is measured from here, the moment the request arrived.
        received = utcnow()
        validate(workspace_id, draft)
        try:
            provider_name, _ = self.providers.for_channel(draft.channel)
        except LookupError as exc:
            raise FailedPrecondition(str(exc), field="message.channel") from exc
        token = uuid.uuid4().hex
        async with self.sessions() as session:
            repo = ChannelRepository(session)
            existing = await repo.find_by_key(workspace_id, draft.idempotency_key)
            if existing is not None:
                return existing, True
            subject, body = render_message(subject=draft.subject, body=draft.body, variables=draft.variables)
            now = received
            row = MessageRow(
                message_id=f"msg_{uuid.uuid4().hex}",
                workspace_id=workspace_id,
                idempotency_key=draft.idempotency_key,
                customer_id=draft.customer_id,
                channel=draft.channel,
                offer_id=draft.offer_id,
                purpose=draft.purpose,
                decision_id=draft.decision_id,
                journey_id=draft.journey_id,
                recipient=draft.recipient,
                locale=draft.locale,
                subject=subject,
                body=body,
                status="queued",
                provider=provider_name,
                provider_message_id="",
                attempts=0,
                error="",
                created_at=now,
                updated_at=now,
            )
            try:
                # Claimed from birth so the worker leaves it to this call.
                await repo.add_message(row, claim_token=token, claimed_until=self._lease_end(now))
                await session.commit()
            except IntegrityError:
                await session.rollback()
                existing = await repo.find_by_key(workspace_id, draft.idempotency_key)
                if existing is None:
                    raise
                return existing, True
        crash_point("after_commit")
        return await self._deliver(row, token), False

    # -- delivery -------------------------------------------------------------------------------

    async def due(self, *, limit: int) -> list[tuple[str, str]]:
        """(message_id, stage) of outbox rows ready for the worker."""
        async with self.sessions() as session:
            return [(r.message_id, r.stage) for r in await ChannelRepository(session).due(utcnow(), limit=limit)]

    async def resume(self, message_id: str) -> bool:
        """Finish whatever an outbox row still needs; False when it is not due or someone holds it."""
        token = uuid.uuid4().hex
        now = utcnow()
        async with self.sessions() as session:
            repo = ChannelRepository(session)
            claimed = await repo.claim(message_id, token=token, now=now, until=self._lease_end(now))
            outbox = await repo.outbox_row(message_id) if claimed else None
            row = await repo.get(message_id) if claimed else None
            await session.commit()
        if outbox is None or row is None:
            return False
        if outbox.stage == STAGE_SEND:
            await self._deliver(row, token)
        else:
            await self._audit_outcome(row, token)
        return True

    async def _deliver(self, row: MessageRow, token: str) -> MessageRow:
        try:
            await self.audit.append(row.workspace_id, self._entry(row, "queued"))
        except Unavailable:
            # Nothing goes out without its audit record; the worker tries again later.
            await self._release(row.message_id, token)
            raise
        _, provider = self.providers.for_channel(row.channel)
        while True:
            now = utcnow()
            async with self.sessions() as session:
                attempt = await ChannelRepository(session).begin_attempt(
                    row.message_id, token=token, now=now, until=self._lease_end(now)
                )
                await session.commit()
            if attempt is None:
                log.warning("lost the outbox lease on %s; leaving it to its new holder", row.message_id)
                return await self._reload(row.message_id)
            crash_point("before_send")
            try:
                result = await provider.send(self._outbound(row, attempt))
            except PermanentProviderError as exc:
                return await self._settle(row, token, status="failed", provider_message_id="", error=_describe(exc))
            except Exception as exc:
                # Unknown failures are retried like transient ones: the idempotency key keeps a
                # re-send from duplicating at providers that honour it.
                if not isinstance(exc, TransientProviderError):
                    log.exception("provider %s raised unexpectedly for %s", row.provider, row.message_id)
                error = _describe(exc)
                if self.policy.exhausted(attempt):
                    return await self._settle(
                        row, token, status="failed", provider_message_id="",
                        error=f"gave up after {attempt} attempts: {error}",
                    )
                delay = self.policy.delay(attempt, rand=self._rand)
                if delay <= self.options.inline_retry_max_delay_seconds:
                    await self._note_error(row.message_id, error)
                    await self._sleep(delay)
                    continue
                retry_at = utcnow() + timedelta(seconds=delay)
                await self._release(row.message_id, token, error=error, available_at=retry_at)
                return await self._reload(row.message_id)
            crash_point("after_send")
            return await self._settle(
                row, token, status="sent", provider_message_id=result.provider_message_id, error=""
            )

    async def _settle(
        self, row: MessageRow, token: str, *, status: str, provider_message_id: str, error: str
    ) -> MessageRow:
        async with self.sessions() as session:
            settled = await ChannelRepository(session).settle(
                row.message_id, token=token, status=status, provider_message_id=provider_message_id,
                error=error, now=utcnow(),
            )
            await session.commit()
        updated = await self._reload(row.message_id)
        if settled:
            await self._audit_outcome(updated, token, raise_unavailable=False)
        return updated

    async def _audit_outcome(self, row: MessageRow, token: str, *, raise_unavailable: bool = True) -> None:
        """Append the sent/failed record, then drop the outbox row. Once the provider has been called
        the message stands; a missing audit record is retried by the worker, not by re-sending."""
        outcome = "failed" if row.status == "failed" else "sent"
        try:
            await self.audit.append(row.workspace_id, self._entry(row, outcome))
        except Unavailable:
            log.warning("audit unavailable for %s outcome of %s; the worker will retry", outcome, row.message_id)
            await self._release(row.message_id, token)
            if raise_unavailable:
                raise
            return
        async with self.sessions() as session:
            await ChannelRepository(session).complete(row.message_id, token=token)
            await session.commit()

    async def _release(
        self, message_id: str, token: str, *, error: str = "", available_at: datetime | None = None
    ) -> None:
        async with self.sessions() as session:
            repo = ChannelRepository(session)
            await repo.release(message_id, token=token, available_at=available_at)
            if error:
                await repo.note_error(message_id, error=error, now=utcnow())
            await session.commit()

    async def _note_error(self, message_id: str, error: str) -> None:
        async with self.sessions() as session:
            await ChannelRepository(session).note_error(message_id, error=error, now=utcnow())
            await session.commit()

    async def _reload(self, message_id: str) -> MessageRow:
        async with self.sessions() as session:
            row = await ChannelRepository(session).get(message_id)
        if row is None:
            raise NotFound(f"message {message_id} not found", field="message_id")
        return row

    def _lease_end(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.options.lease_seconds)

    def _outbound(self, row: MessageRow, attempt: int) -> OutboundMessage:
        return OutboundMessage(
            message_id=row.message_id,
            workspace_id=row.workspace_id,
            idempotency_key=row.idempotency_key,
            channel=row.channel,
            recipient=row.recipient,
            subject=row.subject,
            body=row.body,
            locale=row.locale,
            purpose=row.purpose,
            attempt=attempt,
        )

    def _entry(
        self, row: MessageRow, outcome: str, *, occurred_at: datetime | None = None, extra: dict[str, Any] | None = None
    ) -> AuditEntry:
        preview = self.options.audit_body_preview_chars
        payload: dict[str, Any] = {
            "provider": row.provider,
            "subject": row.subject,
            "body_preview": row.body[:preview],
            "body_chars": len(row.body),
            "purpose": row.purpose,
            "locale": row.locale,
            "attempts": row.attempts,
        }
        if row.provider_message_id:
            payload["provider_message_id"] = row.provider_message_id
        if row.error:
            payload["error"] = row.error[:500]
        payload.update(extra or {})
        return AuditEntry(
            outcome=outcome,
            message_id=row.message_id,
            customer_id=row.customer_id,
            channel=row.channel,
            offer_id=row.offer_id,
            decision_id=row.decision_id,
            journey_id=row.journey_id,
            payload=payload,
            occurred_at=occurred_at,
            idempotency_key=f"{row.message_id}:{outcome}",
        )

    # -- queries --------------------------------------------------------------------------------

    async def get(self, workspace_id: str, *, message_id: str = "", idempotency_key: str = "") -> MessageRow:
        if not workspace_id:
            raise InvalidArgument("workspace_id is required", field="workspace_id")
        if not message_id and not idempotency_key:
            raise InvalidArgument("message_id or idempotency_key is required", field="message_id")
        async with self.sessions() as session:
            repo = ChannelRepository(session)
            if message_id:
                row = await repo.get(message_id, workspace_id=workspace_id)
            else:
                row = await repo.find_by_key(workspace_id, idempotency_key)
        if row is None:
            raise NotFound("message not found", field="message_id" if message_id else "idempotency_key")
        return row

    async def list_messages(
        self, workspace_id: str, customer_id: str, *, page_size: int, page_token: str
    ) -> tuple[list[MessageRow], str]:
        if not workspace_id:
            raise InvalidArgument("workspace_id is required", field="workspace_id")
        if not customer_id:
            raise InvalidArgument("customer_id is required", field="customer_id")
        size = min(max(page_size or 50, 1), MAX_PAGE)
        before = _decode_token(page_token) if page_token else None
        async with self.sessions() as session:
            rows = await ChannelRepository(session).list_for_customer(
                workspace_id, customer_id, before=before, limit=size + 1
            )
        token = _encode_token(rows[size - 1]) if len(rows) > size else ""
        return rows[:size], token

    # -- delivery events ------------------------------------------------------------------------

    async def record_event(
        self,
        workspace_id: str,
        *,
        provider: str,
        provider_message_id: str,
        status: str,
        occurred_at: datetime | None,
        raw: dict[str, Any],
    ) -> MessageRow:
        """Apply a provider event; stale or repeated events leave the message as it is."""
        if not workspace_id:
            raise InvalidArgument("workspace_id is required", field="workspace_id")
        error = ""
        if not status and raw:
            event = self._parse(provider, raw)
            status, error = event.status, event.error
            provider_message_id = provider_message_id or event.provider_message_id
            occurred_at = occurred_at or event.occurred_at
        if not provider_message_id:
            raise InvalidArgument("provider_message_id is required", field="provider_message_id")
        if status not in EVENT_STATUSES:
            raise InvalidArgument(
                f"status must be one of {', '.join(sorted(EVENT_STATUSES))}", field="status"
            )
        async with self.sessions() as session:
            repo = ChannelRepository(session)
            row = await repo.find_by_provider_message_id(workspace_id, provider_message_id, provider=provider)
        if row is None:
            raise NotFound(f"no message with provider_message_id {provider_message_id!r}",
                           field="provider_message_id")
        new_status = apply_event(row.status, status)
        if new_status is None:
            return row
        entry = self._entry(row, new_status, occurred_at=occurred_at, extra={"event_error": error} if error else None)
        # Audit first: a failed append leaves the message unchanged and the webhook can be retried.
        await self.audit.append(workspace_id, entry)
        async with self.sessions() as session:
            await ChannelRepository(session).set_status(
                row.message_id, status=new_status, error=error or row.error, now=utcnow()
            )
            await session.commit()
        return await self._reload(row.message_id)

    def _parse(self, provider: str, raw: dict[str, Any]) -> DeliveryEvent:
        if not provider:
            raise InvalidArgument("provider is required to parse a raw event", field="provider")
        candidates = self.providers.by_name(provider)
        if not candidates:
            raise InvalidArgument(f"no channel uses provider {provider!r}", field="provider")
        for candidate in candidates:
            event = candidate.parse_event(raw)
            if event is not None:
                return event
        raise InvalidArgument("the raw event carries no delivery status", field="raw")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _encode_token(row: MessageRow) -> str:
    raw = f"{aware(row.created_at).isoformat()}|{row.message_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_token(token: str) -> tuple[datetime, str]:
    try:
        created, message_id = base64.urlsafe_b64decode(token.encode()).decode().split("|", 1)
        return datetime.fromisoformat(created), message_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument("page_token is not valid", field="page_token") from exc
