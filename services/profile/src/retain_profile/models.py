"""Profile tables: customers, their identifiers, events, live features, consent state and history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from retain_kit.db import make_metadata
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

metadata = make_metadata()
# SQLite only autoincrements INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = metadata


class CustomerRow(Base):
    __tablename__ = "customers"
    __table_args__ = (Index("ix_customers_workspace_id", "workspace_id", "created_at"),)

    customer_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Set once this customer was merged away; lookups by the old id follow it.
    merged_into: Mapped[str | None] = mapped_column(String(40), nullable=True)
    traits: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # When each trait was last set (event time), for last-writer-wins merging.
    trait_times: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    # Set by a PDPA erasure: personal data is gone, anonymised aggregates remain.
    erased_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class IdentifierRow(Base):
    __tablename__ = "customer_identifiers"
    __table_args__ = (Index("ix_customer_identifiers_customer_id", "customer_id"),)

    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    value: Mapped[str] = mapped_column(String(200), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class EventRow(Base):
    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("workspace_id", "message_id"),
        Index("ix_events_customer_time", "workspace_id", "customer_id", "timestamp", "id"),
        # Events stored before the outbox existed may still await publishing; only those are indexed.
        Index("ix_events_unpublished", "id", postgresql_where=text("published = false"),
              sqlite_where=text("published = false")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[str] = mapped_column(String(200))
    customer_id: Mapped[str] = mapped_column(String(40))
    type: Mapped[str] = mapped_column(String(16))
    event: Mapped[str] = mapped_column(String(200), default="")
    user_id: Mapped[str] = mapped_column(String(200), default="")
    anonymous_id: Mapped[str] = mapped_column(String(200), default="")
    previous_id: Mapped[str] = mapped_column(String(200), default="")
    properties: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    traits: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # False until the event is on the Redis stream (events stored before the outbox; newer ones are tracked
    # by an EventOutboxRow per batch and stored as True).
    published: Mapped[bool] = mapped_column(Boolean, default=False)


class EventOutboxRow(Base):
    """A stored batch whose events are not yet on the Redis stream; deleted once they are."""

    __tablename__ = "event_outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(String(64))
    event_ids: Mapped[list[int]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FeaturesRow(Base):
    """Live features per customer: the order-independent summary plus the features it gave last."""

    __tablename__ = "customer_features"
    __table_args__ = (Index("ix_customer_features_stage", "workspace_id", "lifecycle_stage"),)

    customer_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(64))
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    features: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    lifecycle_stage: Mapped[str] = mapped_column(String(16), default="new")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ConsentRow(Base):
    __tablename__ = "consents"

    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(200), default="")
    lawful_basis: Mapped[str] = mapped_column(String(64), default="")
    policy_version: Mapped[str] = mapped_column(String(64), default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ConsentHistoryRow(Base):
    __tablename__ = "consent_history"
    __table_args__ = (
        UniqueConstraint("change_id"),
        Index("ix_consent_history_customer", "workspace_id", "customer_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    change_id: Mapped[str] = mapped_column(String(40))
    workspace_id: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(String(40))
    channel: Mapped[str] = mapped_column(String(16))
    purpose: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    previous_status: Mapped[str] = mapped_column(String(16), default="")
    source: Mapped[str] = mapped_column(String(200), default="")
    lawful_basis: Mapped[str] = mapped_column(String(64), default="")
    policy_version: Mapped[str] = mapped_column(String(64), default="")
    actor: Mapped[str] = mapped_column(String(128), default="")
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    audit_record_id: Mapped[str] = mapped_column(String(40), default="")


class MergeRow(Base):
    __tablename__ = "customer_merges"
    __table_args__ = (Index("ix_customer_merges_survivor", "workspace_id", "survivor_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(String(64))
    survivor_id: Mapped[str] = mapped_column(String(40))
    merged_id: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(Text, default="")
    merged_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WorkspaceSettingsRow(Base):
    __tablename__ = "workspace_settings"

    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    lifecycle: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_by: Mapped[str] = mapped_column(String(128), default="")


class SegmentRow(Base):
    __tablename__ = "segments"

    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    expression: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(128), default="")


class ErasureRow(Base):
    """A PDPA erasure that was carried out (holds no personal data itself)."""

    __tablename__ = "erasures"
    __table_args__ = (
        UniqueConstraint("erasure_id"),
        Index("ix_erasures_customer", "workspace_id", "customer_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    erasure_id: Mapped[str] = mapped_column(String(40))
    workspace_id: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(String(40))
    requested_by: Mapped[str] = mapped_column(String(128), default="")
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    audit_shredded: Mapped[bool] = mapped_column(Boolean, default=False)
    erased_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ScoreRow(Base):
    """The latest score per (customer, score name) that scoring wrote back, with the model behind it."""

    __tablename__ = "customer_scores"

    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[float] = mapped_column(Float)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str] = mapped_column(String(64))
    horizon_days: Mapped[int] = mapped_column(Integer, default=0)
    scored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
