"""Audit tables. The log is append-only: migrations install triggers that refuse UPDATE and DELETE."""

from __future__ import annotations

from datetime import datetime

from retain_kit.db import make_metadata
from sqlalchemy import BigInteger, DateTime, Index, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

metadata = make_metadata()


class Base(DeclarativeBase):
    metadata = metadata


class AuditRecordRow(Base):
    __tablename__ = "audit_records"
    __table_args__ = (
        UniqueConstraint("workspace_id", "seq"),
        UniqueConstraint("workspace_id", "idempotency_key"),
        Index("ix_audit_records_ws_customer", "workspace_id", "customer_id", "seq"),
        Index("ix_audit_records_ws_decision", "workspace_id", "decision_id"),
    )

    record_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))
    customer_id: Mapped[str] = mapped_column(String(128), default="")
    decision_id: Mapped[str] = mapped_column(String(64), default="")
    message_id: Mapped[str] = mapped_column(String(64), default="")
    channel: Mapped[str] = mapped_column(String(16), default="")
    journey_id: Mapped[str] = mapped_column(String(64), default="")
    offer_id: Mapped[str] = mapped_column(String(64), default="")
    outcome: Mapped[str] = mapped_column(String(32), default="")
    actor: Mapped[str] = mapped_column(String(128), default="")
    payload: Mapped[str] = mapped_column(Text, default="{}")
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class ChainHeadRow(Base):
    """Newest link per workspace; locking this row serialises appends across replicas."""

    __tablename__ = "audit_chain_heads"

    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class CheckpointRow(Base):
    """A signed statement that the workspace's chain had `head_hash` at `seq`; append-only like the log."""

    __tablename__ = "audit_checkpoints"

    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    head_hash: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    signature: Mapped[str] = mapped_column(String(128))
    key_id: Mapped[str] = mapped_column(String(32))


class DataKeyRow(Base):
    """A customer's data key, wrapped by the master key. Deleting the row is the erasure."""

    __tablename__ = "audit_data_keys"

    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32))
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
