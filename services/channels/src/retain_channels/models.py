"""Channel tables: messages, the transactional outbox, and the log provider's sent log."""

from __future__ import annotations

from datetime import datetime

from retain_kit.db import make_metadata
from sqlalchemy import DateTime, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

metadata = make_metadata()


class Base(DeclarativeBase):
    metadata = metadata


class MessageRow(Base):
    """One message per (workspace, idempotency key); holds the rendered text and delivery state."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("workspace_id", "idempotency_key"),
        Index("ix_messages_ws_customer_created", "workspace_id", "customer_id", "created_at", "message_id"),
        Index("ix_messages_ws_provider_message_id", "workspace_id", "provider_message_id"),
    )

    message_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    customer_id: Mapped[str] = mapped_column(String(128))
    channel: Mapped[str] = mapped_column(String(16))
    offer_id: Mapped[str] = mapped_column(String(64), default="")
    purpose: Mapped[str] = mapped_column(String(64), default="")
    decision_id: Mapped[str] = mapped_column(String(64), default="")
    journey_id: Mapped[str] = mapped_column(String(64), default="")
    recipient: Mapped[str] = mapped_column(String(320), default="")
    locale: Mapped[str] = mapped_column(String(16), default="")
    subject: Mapped[str] = mapped_column(Text, default="")
    body: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str] = mapped_column(String(32))
    provider_message_id: Mapped[str] = mapped_column(String(128), default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    # When the Dispatch request arrived (the message is stored moments later).
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # First provider call; minus created_at it is the dispatch-to-provider latency.
    provider_called_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class OutboxRow(Base):
    """Work left to do for a message. stage "send": call the provider; stage "audit": the send is
    settled but its audit record is not yet durable. Deleted once both are done."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_available_at", "available_at"),)

    message_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(64))
    stage: Mapped[str] = mapped_column(String(8))
    available_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    claim_token: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SentLogRow(Base):
    """What the `log` provider would have sent; unique per idempotency key so re-sends are no-ops."""

    __tablename__ = "sent_log"
    __table_args__ = (UniqueConstraint("workspace_id", "idempotency_key"),)

    provider_message_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    message_id: Mapped[str] = mapped_column(String(40))
    channel: Mapped[str] = mapped_column(String(16))
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
