"""profile: workspace settings, API-defined segments, PDPA erasures

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "workspace_settings",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("lifecycle", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
    )
    op.create_table(
        "segments",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("expression", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
    )
    op.create_table(
        "erasures",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("erasure_id", sa.String(40), nullable=False),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(40), nullable=False),
        sa.Column("requested_by", sa.String(128), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("audit_shredded", sa.Boolean(), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("erasure_id", name="uq_erasures_erasure_id"),
    )
    op.create_index("ix_erasures_customer", "erasures", ["workspace_id", "customer_id"])


def downgrade() -> None:
    for table in ("erasures", "segments", "workspace_settings"):
        op.drop_table(table)
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("erased_at")
