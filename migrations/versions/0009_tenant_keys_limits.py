"""tenant keys and limits: hashed API keys per tenant, idempotent file uploads, budget
warnings on submissions, and the indexes the per-tenant limits count with

Revision ID: 0009_tenant_keys_limits
Revises: 0008_webhooks
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009_tenant_keys_limits"
down_revision: str | None = "0008_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNFINISHED = sa.text("status IN ('queued', 'batched', 'running')")


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant_id", "created_at"])

    op.add_column("files", sa.Column("idempotency_key", sa.String(255), nullable=True))
    op.add_column("files", sa.Column("request_hash", sa.String(64), nullable=True))
    op.create_unique_constraint("uq_files_tenant_idempotency_key", "files",
                                ["tenant_id", "idempotency_key"])
    # The sweeper forgets idempotency keys past their window: walk only keyed rows.
    op.create_index("ix_files_idempotency_created", "files", ["created_at"],
                    postgresql_where=sa.text("idempotency_key IS NOT NULL"))
    op.create_index("ix_submissions_idempotency_created", "submissions", ["created_at"],
                    postgresql_where=sa.text("idempotency_key IS NOT NULL"))

    op.add_column("submissions", sa.Column("warnings", postgresql.JSONB(), nullable=True))
    # The queued-jobs limit and the budget's reservation count a tenant's unfinished jobs.
    op.create_index("ix_jobs_tenant_unfinished", "jobs", ["tenant_id", "status"],
                    postgresql_where=_UNFINISHED)
    # A budget sums the tenant's ledger since the start of the month.
    op.create_index("ix_ledger_entries_tenant_created", "ledger_entries",
                    ["tenant_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_ledger_entries_tenant_created", "ledger_entries")
    op.drop_index("ix_jobs_tenant_unfinished", "jobs")
    op.drop_column("submissions", "warnings")
    op.drop_index("ix_submissions_idempotency_created", "submissions")
    op.drop_index("ix_files_idempotency_created", "files")
    op.drop_constraint("uq_files_tenant_idempotency_key", "files")
    op.drop_column("files", "request_hash")
    op.drop_column("files", "idempotency_key")
    op.drop_index("ix_api_keys_tenant", "api_keys")
    op.drop_table("api_keys")
