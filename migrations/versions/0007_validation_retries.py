"""validation retries: a batch whose validation raised is tried again later, a bounded
number of times, instead of blocking every batch behind it

Revision ID: 0007_validation_retries
Revises: 0006_validating
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_validation_retries"
down_revision: str | None = "0006_validating"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("submissions", sa.Column("validation_attempts", sa.Integer(),
                                           nullable=False, server_default="0"))
    op.add_column("submissions", sa.Column("validate_after", sa.DateTime(timezone=True),
                                           nullable=True))
    # Fresh batches first, then by age: the index serves the claim's order.
    op.drop_index("ix_submissions_validating", "submissions")
    op.create_index("ix_submissions_validating", "submissions",
                    ["validation_attempts", "created_at"],
                    postgresql_where=sa.text("status = 'validating'"))


def downgrade() -> None:
    op.drop_index("ix_submissions_validating", "submissions")
    op.create_index("ix_submissions_validating", "submissions", ["created_at"],
                    postgresql_where=sa.text("status = 'validating'"))
    op.drop_column("submissions", "validate_after")
    op.drop_column("submissions", "validation_attempts")
