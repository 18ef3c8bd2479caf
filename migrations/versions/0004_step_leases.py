"""Step leases: one run at a time computes a fingerprint (cairn.engine.leases)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 22:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "step_leases",
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("step", sa.String(length=64), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_step_leases_run_id_runs")),
        sa.PrimaryKeyConstraint("fingerprint", name=op.f("pk_step_leases")),
    )
    op.create_index(op.f("ix_step_leases_run_id"), "step_leases", ["run_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_step_leases_run_id"), table_name="step_leases")
    op.drop_table("step_leases")
