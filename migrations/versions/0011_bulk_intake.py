"""bulk intake: a CSV upload keeps its header and each job its row, for results as CSV

Revision ID: 0011_bulk_intake
Revises: 0010_result_cache
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011_bulk_intake"
down_revision: str | None = "0010_result_cache"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("submissions", sa.Column("input_columns", postgresql.JSONB()))
    op.add_column("jobs", sa.Column("input_row", postgresql.JSONB()))


def downgrade() -> None:
    op.drop_column("jobs", "input_row")
    op.drop_column("submissions", "input_columns")
