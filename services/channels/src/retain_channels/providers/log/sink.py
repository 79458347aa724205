"""The `log` provider: records what would be sent (a JSON line in a file plus a sent_log row).

It is the embedded default for every channel, and honours the idempotency key like a real provider
would: a message already recorded under its key is never written a second time.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from retain_kit.enums import DELIVERY_STATUSES
from retain_kit.protoconv import utcnow
from sqlalchemy.exc import IntegrityError

from retain_channels.models import SentLogRow
from retain_channels.providers.base import (
    DeliveryEvent,
    OutboundMessage,
    PermanentProviderError,
    ProviderContext,
    SendResult,
)
from retain_channels.repository import ChannelRepository


class LogConfig(BaseModel):
    # Relative paths are under the service's var_dir.
    path: str = "channels-outbox.jsonl"


class LogProvider:
    """Writes one JSON line per message to `var_dir/path` and keeps the record in the sent_log table."""

    def __init__(self, config: LogConfig, ctx: ProviderContext) -> None:
        path = Path(config.path)
        self.path = path if path.is_absolute() else ctx.var_dir / path
        self.channel = ctx.channel
        self._sessions = ctx.sessions
        self._write_lock = asyncio.Lock()

    async def send(self, msg: OutboundMessage) -> SendResult:
        async with self._sessions() as session:
            repo = ChannelRepository(session)
            existing = await repo.find_sent(msg.workspace_id, msg.idempotency_key)
            if existing is not None:
                return SendResult(existing.provider_message_id, {"replayed": True})
            row: SentLogRow | None = None
            if msg.attempt > 1:
                # An earlier attempt may have written its line and died before committing the row.
                row = await asyncio.to_thread(self._find_line, msg.workspace_id, msg.idempotency_key)
            written = row is not None
            if row is None:
                row = self._record(msg)
            try:
                # The row goes in first: its unique key stops a concurrent re-send before the file is touched.
                await repo.add_sent(row)
                if not written:
                    await self._append(row, msg.locale)
                await session.commit()
            except IntegrityError:
                await session.rollback()
                existing = await repo.find_sent(msg.workspace_id, msg.idempotency_key)
                if existing is None:
                    raise
                return SendResult(existing.provider_message_id, {"replayed": True})
        return SendResult(row.provider_message_id, {"path": str(self.path), "replayed": written})

    def parse_event(self, payload: dict[str, Any]) -> DeliveryEvent | None:
        """Accepts {"provider_message_id": "log_…", "status": "delivered", "error": "…"}."""
        provider_message_id = str(payload.get("provider_message_id", ""))
        status = str(payload.get("status", ""))
        if not provider_message_id.startswith("log_") or status not in DELIVERY_STATUSES:
            return None
        error = str(payload.get("error", ""))
        return DeliveryEvent(provider_message_id=provider_message_id, status=status, error=error)

    async def close(self) -> None:
        return None

    def _record(self, msg: OutboundMessage) -> SentLogRow:
        if msg.channel != self.channel:
            raise PermanentProviderError(f"log provider for {self.channel} got a {msg.channel} message")
        return SentLogRow(
            provider_message_id=f"log_{uuid.uuid4().hex}",
            workspace_id=msg.workspace_id,
            idempotency_key=msg.idempotency_key,
            message_id=msg.message_id,
            channel=msg.channel,
            recipient=msg.recipient,
            subject=msg.subject,
            body=msg.body,
            created_at=utcnow(),
        )

    async def _append(self, row: SentLogRow, locale: str) -> None:
        line = json.dumps(
            {
                "ts": row.created_at.isoformat(),
                "provider_message_id": row.provider_message_id,
                "workspace_id": row.workspace_id,
                "idempotency_key": row.idempotency_key,
                "message_id": row.message_id,
                "channel": row.channel,
                "recipient": row.recipient,
                "locale": locale,
                "subject": row.subject,
                "body": row.body,
            },
            ensure_ascii=False,
        )
        async with self._write_lock:
            await asyncio.to_thread(self._write, line)

    def _write(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def _find_line(self, workspace_id: str, idempotency_key: str) -> SentLogRow | None:
        if not self.path.exists():
            return None
        needle = json.dumps(idempotency_key, ensure_ascii=False)
        with self.path.open(encoding="utf-8") as handle:
            for raw in handle:
                if needle not in raw:
                    continue
                try:
                    entry = json.loads(raw)
                except json.JSONDecodeError:
                    continue
                if entry.get("workspace_id") == workspace_id and entry.get("idempotency_key") == idempotency_key:
                    return SentLogRow(
                        provider_message_id=entry["provider_message_id"],
                        workspace_id=workspace_id,
                        idempotency_key=idempotency_key,
                        message_id=entry.get("message_id", ""),
                        channel=entry.get("channel", self.channel),
                        recipient=entry.get("recipient", ""),
                        subject=entry.get("subject", ""),
                        body=entry.get("body", ""),
                        created_at=utcnow(),
                    )
        return None
