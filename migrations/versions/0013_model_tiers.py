"""model tiers: the route a job took (auto or cascade), cascade attempts, route on the ledger

Revision ID: 0013_model_tiers
Revises: 0010_result_cache
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013_model_tiers"
down_revision: str | None = "0012_ledger_costing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("route", postgresql.JSONB()))
    op.add_column("jobs", sa.Column(
        "cascade_of", sa.Uuid(), sa.ForeignKey("jobs.id", name="fk_jobs_cascade_of")))
    op.create_index("ix_jobs_cascade_of", "jobs", ["cascade_of"],
                    postgresql_where=sa.text("cascade_of IS NOT NULL"))
    op.add_column("ledger_entries", sa.Column("route", sa.String(200)))


def downgrade() -> None:
    op.drop_column("ledger_entries", "route")
    op.drop_index("ix_jobs_cascade_of", table_name="jobs")
    op.drop_column("jobs", "cascade_of")
    op.drop_column("jobs", "route")
