"""profile: publish outbox (one row per ingest batch instead of a flag flipped on every event)

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UNPUBLISHED = sa.text("published = false")


def upgrade() -> None:
    op.create_table(
        "event_outbox",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("event_ids", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    # Only events stored before the outbox can still be unpublished: index just those.
    op.drop_index("ix_events_published", table_name="events")
    op.create_index(
        "ix_events_unpublished", "events", ["id"], postgresql_where=UNPUBLISHED, sqlite_where=UNPUBLISHED
    )


def downgrade() -> None:
    op.drop_index("ix_events_unpublished", table_name="events")
    op.create_index("ix_events_published", "events", ["published", "id"])
    op.drop_table("event_outbox")
