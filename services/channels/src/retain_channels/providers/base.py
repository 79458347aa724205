"""The provider contract every channel adapter implements, and the errors that steer retries."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


@dataclass(frozen=True)
class OutboundMessage:
    """A rendered message ready for a provider.

    `idempotency_key` is stable across every attempt for the same message: adapters pass it (or a value
    derived from it, e.g. a UUID for LINE's X-Line-Retry-Key) as the provider's idempotency token so a
    re-send after a crash cannot deliver twice at providers that honour one.
    """

    message_id: str
    workspace_id: str
    idempotency_key: str
    channel: str
    recipient: str
    subject: str
    body: str
    locale: str = ""
    # "marketing" mail carries List-Unsubscribe headers; transactional mail does not.
    purpose: str = ""
    # Optional HTML alternative for email; other channels ignore it.
    html_body: str = ""
    # 1 for the first call; greater when this message may already have reached the provider.
    attempt: int = 1


@dataclass(frozen=True)
class SendResult:
    provider_message_id: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeliveryEvent:
    """A provider event mapped onto our delivery statuses."""

    provider_message_id: str
    status: str
    occurred_at: datetime | None = None
    error: str = ""


class ProviderError(Exception):
    """Base for provider failures; subclasses decide whether the send may be retried."""


class TransientProviderError(ProviderError):
    """Timeouts, throttling, 5xx: the same send may succeed later."""


class PermanentProviderError(ProviderError):
    """Invalid recipient, rejected content, bad credentials: retrying cannot help.

    `reason` is a machine-readable cause for callers that act on it, e.g. "unregistered" when a push
    token or subscription is gone and should be invalidated.
    """

    def __init__(self, message: str = "", *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ProviderContext:
    """What the service hands a provider besides its own config."""

    channel: str
    var_dir: Path
    sessions: async_sessionmaker[AsyncSession]


class Provider(Protocol):
    """One vendor on one channel (email over SMTP, SMS through Twilio, LINE OA, push, ...).

    Instances are built per channel by the registry from a pydantic config; they may hold clients
    but must not share mutable state with other instances.
    """

    async def send(self, msg: OutboundMessage) -> SendResult:
        """Hand the message to the vendor. Raises TransientProviderError or PermanentProviderError."""
        ...

    def parse_event(self, payload: dict[str, Any]) -> DeliveryEvent | None:
        """Map a vendor callback (already signature-verified) to a delivery event; None to ignore it."""
        ...

    async def close(self) -> None:
        """Release clients and connections."""
        ...
