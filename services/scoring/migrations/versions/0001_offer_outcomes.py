"""offer outcome counters and outcome log

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "offer_outcomes",
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("offer_id", sa.String(64), nullable=False),
        sa.Column("impressions", sa.BigInteger(), nullable=False),
        sa.Column("clicks", sa.BigInteger(), nullable=False),
        sa.Column("accepts", sa.BigInteger(), nullable=False),
        sa.Column("declines", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "offer_id", name="pk_offer_outcomes"),
    )
    op.create_table(
        "offer_outcome_events",
        sa.Column("event_id", sa.String(40), primary_key=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("decision_id", sa.String(64), nullable=True),
        sa.Column("offer_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint(
            "workspace_id", "decision_id", "offer_id", "outcome", name="uq_offer_outcome_events_workspace_id"
        ),
    )
    op.create_index(
        "ix_offer_outcome_events_ws_customer", "offer_outcome_events", ["workspace_id", "customer_id"]
    )


def downgrade() -> None:
    op.drop_table("offer_outcome_events")
    op.drop_table("offer_outcomes")
