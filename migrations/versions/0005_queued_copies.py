"""queued copies: single-flight finds every queued copy of a request it just batched

Revision ID: 0005_queued_copies
Revises: 0004_embeddings
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_queued_copies"
down_revision: str | None = "0004_embeddings"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_jobs_queued_key", "jobs", ["single_flight_key"],
                    postgresql_where=sa.text("status = 'queued' "
                                             "AND single_flight_key IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_jobs_queued_key", "jobs")
