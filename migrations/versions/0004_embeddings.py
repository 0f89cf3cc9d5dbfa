"""embeddings: the vectors of an embeddings job on its result row

Revision ID: 0004_embeddings
Revises: 0003_coalescer
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_embeddings"
down_revision: str | None = "0003_coalescer"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("results", sa.Column("embedding", sa.LargeBinary()))
    op.add_column("results", sa.Column("embedding_dimensions", sa.Integer()))


def downgrade() -> None:
    op.drop_column("results", "embedding_dimensions")
    op.drop_column("results", "embedding")
