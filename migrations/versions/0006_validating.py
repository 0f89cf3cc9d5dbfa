"""validating: OpenAI batches are validated off the request, and say when they started

Revision ID: 0006_validating
Revises: 0005_queued_copies
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_validating"
down_revision: str | None = "0005_queued_copies"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("submissions",
                  sa.Column("in_progress_at", sa.DateTime(timezone=True), nullable=True))
    # Batches stored before this revision were queued in the request that created them.
    op.execute("UPDATE submissions SET in_progress_at = created_at "
               "WHERE kind IN ('openai_batch', 'anthropic_batch') AND status <> 'failed'")
    op.create_index("ix_submissions_validating", "submissions", ["created_at"],
                    postgresql_where=sa.text("status = 'validating'"))


def downgrade() -> None:
    # A batch still validating has no jobs; the older code cannot validate it, so it fails.
    op.execute("UPDATE submissions SET status = 'failed', failed_at = now(), "
               "errors = '[{\"line\": null, \"code\": \"validation_abandoned\", "
               "\"message\": \"the service was downgraded before this batch was validated\", "
               "\"param\": null}]' WHERE status = 'validating'")
    op.drop_index("ix_submissions_validating", "submissions")
    op.drop_column("submissions", "in_progress_at")
