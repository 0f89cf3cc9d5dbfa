"""intake speed: the jobs-by-batch index leaves out jobs in no batch

Every job is inserted with no batch, and the full index took an entry for each of those
NULLs on the way in; every query on it asks for one batch's jobs (`batch_id = ...`),
which the partial index answers as before.

Revision ID: 0018_intake_speed
Revises: 0014_semantic_cache
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018_intake_speed"
down_revision: str | None = "0014_semantic_cache"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_jobs_batch", table_name="jobs")
    op.create_index("ix_jobs_batch", "jobs", ["batch_id"],
                    postgresql_where=sa.text("batch_id IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_jobs_batch", table_name="jobs")
    op.create_index("ix_jobs_batch", "jobs", ["batch_id"])
