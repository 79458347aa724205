"""profile: customers, identifiers, events, features, consent state and history, merges

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("customer_id", sa.String(40), primary_key=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("merged_into", sa.String(40), nullable=True),
        sa.Column("traits", sa.JSON(), nullable=False),
        sa.Column("trait_times", sa.JSON(), nullable=False),
    )
    op.create_index("ix_customers_workspace_id", "customers", ["workspace_id", "created_at"])
    op.create_table(
        "customer_identifiers",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("value", sa.String(200), primary_key=True),
        sa.Column("customer_id", sa.String(40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_customer_identifiers_customer_id", "customer_identifiers", ["customer_id"])
    op.create_table(
        "events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("message_id", sa.String(200), nullable=False),
        sa.Column("customer_id", sa.String(40), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("event", sa.String(200), nullable=False),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("anonymous_id", sa.String(200), nullable=False),
        sa.Column("previous_id", sa.String(200), nullable=False),
        sa.Column("properties", sa.JSON(), nullable=False),
        sa.Column("traits", sa.JSON(), nullable=False),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("workspace_id", "message_id", name="uq_events_workspace_id"),
    )
    op.create_index("ix_events_customer_time", "events", ["workspace_id", "customer_id", "timestamp", "id"])
    op.create_index("ix_events_published", "events", ["published", "id"])
    op.create_table(
        "customer_features",
        sa.Column("customer_id", sa.String(40), primary_key=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("lifecycle_stage", sa.String(16), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_customer_features_stage", "customer_features", ["workspace_id", "lifecycle_stage"])
    op.create_table(
        "consents",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(40), primary_key=True),
        sa.Column("channel", sa.String(16), primary_key=True),
        sa.Column("purpose", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("lawful_basis", sa.String(64), nullable=False),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "consent_history",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("change_id", sa.String(40), nullable=False),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(40), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("previous_status", sa.String(16), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("lawful_basis", sa.String(64), nullable=False),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("audit_record_id", sa.String(40), nullable=False),
        sa.UniqueConstraint("change_id", name="uq_consent_history_change_id"),
    )
    op.create_index("ix_consent_history_customer", "consent_history", ["workspace_id", "customer_id", "id"])
    op.create_table(
        "customer_merges",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("survivor_id", sa.String(40), nullable=False),
        sa.Column("merged_id", sa.String(40), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("merged_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_customer_merges_survivor", "customer_merges", ["workspace_id", "survivor_id"])


def downgrade() -> None:
    for table in ("customer_merges", "consent_history", "consents", "customer_features", "events",
                  "customer_identifiers", "customers"):
        op.drop_table(table)
