"""trace context: the W3C traceparent of the intake request on each submission, and of
the coalescer's batch span on each batch

Kept per submission, not per job: a bulk request's jobs share one, and the jobs' COPY
path stays as it was. Both are NULL unless tracing is on.

Revision ID: 0020_trace_context
Revises: 0018_intake_speed
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020_trace_context"
down_revision: str | None = "0021_prompt_compression"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("submissions", sa.Column("traceparent", sa.String(55)))
    op.add_column("batches", sa.Column("traceparent", sa.String(55)))


def downgrade() -> None:
    op.drop_column("batches", "traceparent")
    op.drop_column("submissions", "traceparent")
