"""semantic cache: answers to close questions in pgvector, its counters, and the ledger's
record of which entry served a job at what similarity

Revision ID: 0014_semantic_cache
Revises: 0010_result_cache
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_semantic_cache"
down_revision: str | None = "0013_model_tiers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(20, 10)
# all-MiniLM-L6-v2, the default embedder. An HNSW index needs one fixed dimension.
DIMENSIONS = 384

# The vector table only exists where the extension does: a Postgres without pgvector still
# migrates (everything else works), and penny refuses to start with the semantic cache on
# there, naming the setting. A later `penny migrate`-style start on a server that gained
# the extension creates it (see models.semantic_cache.ensure_semantic_table).
SEMANTIC_TABLE_DDL = (
    "CREATE EXTENSION IF NOT EXISTS vector",
    f"""
    CREATE TABLE IF NOT EXISTS semantic_cache (
        id uuid PRIMARY KEY,
        tenant_id uuid NOT NULL REFERENCES tenants(id),
        model varchar(200) NOT NULL,
        context_key varchar(64) NOT NULL,
        embedding_model varchar(200) NOT NULL,
        question text NOT NULL,
        embedding vector({DIMENSIONS}) NOT NULL,
        source_job_id uuid NOT NULL,
        text text NOT NULL,
        finish_reason varchar(40) NOT NULL,
        prompt_tokens integer NOT NULL,
        cached_tokens integer NOT NULL,
        output_tokens integer NOT NULL,
        mean_logprob double precision,
        cost_usd numeric(20, 10) NOT NULL,
        list_cost_usd numeric(20, 10) NOT NULL,
        hits bigint NOT NULL DEFAULT 0,
        last_hit_at timestamptz,
        outcomes jsonb NOT NULL DEFAULT '[]'::jsonb,
        corrected_at timestamptz,
        created_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS ix_semantic_cache_embedding ON semantic_cache "
    "USING hnsw (embedding vector_cosine_ops)",
    "CREATE INDEX IF NOT EXISTS ix_semantic_cache_scope ON semantic_cache "
    "(tenant_id, model, context_key)",
    "CREATE INDEX IF NOT EXISTS ix_semantic_cache_tenant_created ON semantic_cache "
    "(tenant_id, created_at, id)",
    "CREATE INDEX IF NOT EXISTS ix_semantic_cache_expires ON semantic_cache (expires_at)",
)


def pgvector_available(bind: sa.Connection) -> bool:
    return bind.execute(sa.text(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")).first() is not None


def upgrade() -> None:
    op.add_column("ledger_entries", sa.Column("cache_entry_id", sa.Uuid()))
    op.add_column("ledger_entries", sa.Column("cache_similarity", sa.Float()))
    op.add_column("result_cache", sa.Column("corrected_at", sa.DateTime(timezone=True)))
    op.create_table(
        "semantic_cache_counters",
        sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenants.id"), primary_key=True),
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("count", sa.BigInteger(), server_default="0", nullable=False),
    )
    if pgvector_available(op.get_bind()):
        for statement in SEMANTIC_TABLE_DDL:
            op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS semantic_cache")
    op.drop_table("semantic_cache_counters")
    op.drop_column("result_cache", "corrected_at")
    op.drop_column("ledger_entries", "cache_similarity")
    op.drop_column("ledger_entries", "cache_entry_id")
