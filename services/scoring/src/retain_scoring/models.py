"""Scoring tables: per-offer outcome counters and the outcome log they are built from."""

from __future__ import annotations

from datetime import datetime

from retain_kit.db import make_metadata
from sqlalchemy import BigInteger, DateTime, Index, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

metadata = make_metadata()


class Base(DeclarativeBase):
    metadata = metadata


class OfferOutcomeRow(Base):
    """Counters per workspace and offer; updated with `col = col + n` so replicas never lose increments."""

    __tablename__ = "offer_outcomes"

    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    offer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    impressions: Mapped[int] = mapped_column(BigInteger, default=0)
    clicks: Mapped[int] = mapped_column(BigInteger, default=0)
    accepts: Mapped[int] = mapped_column(BigInteger, default=0)
    declines: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OfferSegmentOutcomeRow(Base):
    """The same counters per customer segment (what Thompson sampling learns from)."""

    __tablename__ = "offer_segment_outcomes"

    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    offer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    segment: Mapped[str] = mapped_column(String(64), primary_key=True)
    impressions: Mapped[int] = mapped_column(BigInteger, default=0)
    clicks: Mapped[int] = mapped_column(BigInteger, default=0)
    accepts: Mapped[int] = mapped_column(BigInteger, default=0)
    declines: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OutcomeEventRow(Base):
    """Every recorded outcome (training data for later models); the unique key makes retries idempotent.

    decision_id is NULL when the caller had none, and NULLs never collide in the unique constraint.
    """

    __tablename__ = "offer_outcome_events"
    __table_args__ = (
        UniqueConstraint("workspace_id", "decision_id", "offer_id", "outcome"),
        Index("ix_offer_outcome_events_ws_customer", "workspace_id", "customer_id"),
    )

    event_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(64))
    decision_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    offer_id: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(String(128), default="")
    outcome: Mapped[str] = mapped_column(String(16))
    segment: Mapped[str] = mapped_column(String(64), default="", server_default="")
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
