"""offer outcome counters per customer segment

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "offer_segment_outcomes",
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("offer_id", sa.String(64), nullable=False),
        sa.Column("segment", sa.String(64), nullable=False),
        sa.Column("impressions", sa.BigInteger(), nullable=False),
        sa.Column("clicks", sa.BigInteger(), nullable=False),
        sa.Column("accepts", sa.BigInteger(), nullable=False),
        sa.Column("declines", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "offer_id", "segment", name="pk_offer_segment_outcomes"),
    )
    op.add_column("offer_outcome_events", sa.Column("segment", sa.String(64), nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_column("offer_outcome_events", "segment")
    op.drop_table("offer_segment_outcomes")
