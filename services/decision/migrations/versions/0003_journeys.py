"""journeys: definitions with history, instances, timers, effect outbox, step log, observations

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _ts(name: str, *, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "journeys",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("journey_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
        _ts("updated_at"),
    )
    op.create_table(
        "journey_versions",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("journey_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        _ts("created_at"),
    )
    op.create_table(
        "journey_instances",
        sa.Column("instance_id", sa.String(64), primary_key=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("journey_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("holdout", sa.Boolean(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("waiting", sa.String(16), nullable=False),
        _ts("wake_at", nullable=True),
        _ts("entered_at"),
        sa.Column("exit_reason", sa.String(32), nullable=False),
        _ts("converted_at", nullable=True),
        sa.Column("context", sa.Text(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        _ts("updated_at"),
    )
    op.create_index(
        "ix_journey_instances_customer", "journey_instances", ["workspace_id", "customer_id", "journey_id"]
    )
    op.create_index("ix_journey_instances_journey", "journey_instances", ["workspace_id", "journey_id"])
    op.create_table(
        "journey_inputs",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("journey_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("input_key", sa.String(200), primary_key=True),
        _ts("handled_at"),
    )
    op.create_table(
        "journey_timers",
        sa.Column("timer_id", sa.String(200), primary_key=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("journey_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("instance_id", sa.String(64), nullable=False),
        sa.Column("step_id", sa.String(64), nullable=False),
        _ts("due_at"),
        sa.Column("status", sa.String(16), nullable=False),
        _ts("lease_until", nullable=True),
    )
    op.create_index("ix_journey_timers_due", "journey_timers", ["status", "due_at"])
    op.create_table(
        "journey_effects",
        sa.Column("effect_id", sa.String(200), primary_key=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("journey_id", sa.String(64), nullable=False),
        sa.Column("instance_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("step_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ts("lease_until", nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
    )
    op.create_index("ix_journey_effects_pending", "journey_effects", ["status", "created_at"])
    op.create_table(
        "journey_step_log",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("journey_id", sa.String(64), nullable=False),
        sa.Column("instance_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("step_id", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("holdout", sa.Boolean(), nullable=False),
        _ts("at"),
    )
    # One row per instance, step and outcome: a re-executed effect cannot be counted twice.
    op.create_index(
        "ux_journey_step_log", "journey_step_log", ["instance_id", "step_id", "outcome"], unique=True
    )
    op.create_index("ix_journey_step_log_journey", "journey_step_log", ["workspace_id", "journey_id"])
    op.create_table(
        "journey_observations",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("journey_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("value", sa.Float(), nullable=False),
        _ts("updated_at"),
    )
    op.create_table(
        "journey_audience",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(64), primary_key=True),
        _ts("last_seen_at"),
    )


def downgrade() -> None:
    for table in (
        "journey_audience", "journey_observations", "journey_step_log", "journey_effects", "journey_timers",
        "journey_inputs", "journey_instances", "journey_versions", "journeys",
    ):
        op.drop_table(table)
