"""routing policy: versioned router classifiers (a logistic regression on the request
embedding that `auto` consults after its cheap features)

Revision ID: 0023_routing_policy
Revises: 0018_intake_speed
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0023_routing_policy"
down_revision: str | None = "0020_trace_context"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "router_classifiers",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False, unique=True),
        sa.Column("embedding_model", sa.String(200), nullable=False),
        sa.Column("dimensions", sa.Integer(), nullable=False),
        sa.Column("weights", postgresql.JSONB(), nullable=False),
        sa.Column("bias", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        # What it was trained on and how it scored: items, target, accuracy, cost.
        sa.Column("trained_on", postgresql.JSONB(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
    )


def downgrade() -> None:
    op.drop_table("router_classifiers")
