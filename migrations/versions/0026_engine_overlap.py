"""engine overlap: a batch the coalescer wrote keeps taking arrivals until a worker takes it

`batches.takes_arrivals` is true for batches the coalescer plans. While such a batch waits
for its engine (pending, never started), the coalescer adds newly queued jobs of its model
to it, so a busy engine's next call runs everything that arrived before it could start
instead of only what was queued when the batch was planned. Halves of a batch split after
the engine raised are false: they exist to find the job that broke the engine, and new jobs
joining them would keep that search from ending.

Revision ID: 0026_engine_overlap
Revises: 0019_ledger_reports
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0026_engine_overlap"
down_revision: str | None = "0028_audit_rollup"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("batches", sa.Column("takes_arrivals", sa.Boolean(), nullable=False,
                                       server_default=sa.false()))


def downgrade() -> None:
    op.drop_column("batches", "takes_arrivals")
