"""result cache: exact answers kept across submissions; a cache hit has no batch

Revision ID: 0010_result_cache
Revises: 0009_tenant_keys_limits
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010_result_cache"
down_revision: str | None = "0009_tenant_keys_limits"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(20, 10)


def upgrade() -> None:
    op.create_table(
        "result_cache",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("cache_key", sa.String(64), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("model_identity", sa.String(64), nullable=False),
        sa.Column("request", postgresql.JSONB(), nullable=False),
        sa.Column("source_job_id", sa.Uuid(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("finish_reason", sa.String(40), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("cached_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("mean_logprob", sa.Float()),
        sa.Column("embedding", sa.LargeBinary()),
        sa.Column("embedding_dimensions", sa.Integer()),
        sa.Column("cost_usd", MONEY, nullable=False),
        sa.Column("list_cost_usd", MONEY, nullable=False),
        sa.Column("hits", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_hit_at", sa.DateTime(timezone=True)),
        sa.Column("last_used_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant_id", "cache_key", name="uq_result_cache_tenant_key"),
    )
    op.create_index("ix_result_cache_tenant_used", "result_cache", ["tenant_id", "last_used_at"])
    op.create_index("ix_result_cache_tenant_created", "result_cache",
                    ["tenant_id", "created_at", "id"])
    op.create_index("ix_result_cache_expires", "result_cache", ["expires_at"])
    op.add_column("jobs", sa.Column("cache_mode", sa.String(10), server_default="on",
                                    nullable=False))
    op.add_column("ledger_entries", sa.Column("cache_saved_usd", MONEY, server_default="0",
                                              nullable=False))
    # A job answered from the cache at intake never belongs to a batch.
    op.alter_column("results", "batch_id", nullable=True)
    op.alter_column("ledger_entries", "batch_id", nullable=True)


def downgrade() -> None:
    # Cache hits have no batch and cannot be expressed in the older schema.
    op.execute("DELETE FROM ledger_entries WHERE batch_id IS NULL")
    op.execute("DELETE FROM results WHERE batch_id IS NULL")
    op.alter_column("ledger_entries", "batch_id", nullable=False)
    op.alter_column("results", "batch_id", nullable=False)
    op.drop_column("ledger_entries", "cache_saved_usd")
    op.drop_column("jobs", "cache_mode")
    op.drop_table("result_cache")
