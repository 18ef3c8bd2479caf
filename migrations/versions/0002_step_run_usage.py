"""step runs record their compute usage (worker/CPU/GPU-seconds, peak memory per worker)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 19:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


# Plain ALTER TABLE (SQLite ≥ 3.35 and PostgreSQL both add and drop a column in place): a batch
# operation would recreate step_runs, which the foreign keys of other tables forbid on SQLite.
def upgrade() -> None:
    op.add_column("step_runs", sa.Column("usage", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("step_runs", "usage")
