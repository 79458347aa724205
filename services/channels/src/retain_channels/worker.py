"""The outbox worker: finishes messages a crash, an audit outage or a long backoff left behind."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from retain_kit.errors import Unavailable

from retain_channels.service import Channels

log = logging.getLogger(__name__)


class OutboxWorker:
    def __init__(self, channels: Channels, *, poll_seconds: float, batch_size: int) -> None:
        self.channels = channels
        self.poll_seconds = poll_seconds
        self.batch_size = batch_size
        self._stop = asyncio.Event()

    async def run_once(self) -> int:
        """One pass over the due outbox rows; returns how many this worker took on."""
        handled = 0
        for message_id, stage in await self.channels.due(limit=self.batch_size):
            try:
                if await self.channels.resume(message_id):
                    handled += 1
            except Unavailable as exc:
                log.warning("outbox %s (%s) waits for audit: %s", message_id, stage, exc.message)
            except Exception:
                log.exception("outbox %s (%s) failed", message_id, stage)
        return handled

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                handled = await self.run_once()
            except Exception:
                # A database hiccup must not kill the loop; the next pass tries again.
                log.exception("outbox pass failed")
                handled = 0
            if handled >= self.batch_size:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.poll_seconds)

    def stop(self) -> None:
        self._stop.set()
