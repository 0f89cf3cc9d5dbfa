"""coalescer: deadlines, single-flight, prefix affinity, worker presence, ledger savings

Revision ID: 0003_coalescer
Revises: 0002_openai_batches
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_coalescer"
down_revision: str | None = "0002_openai_batches"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(20, 10)


def upgrade() -> None:
    op.add_column("jobs", sa.Column("deadline_at", sa.DateTime(timezone=True)))
    op.add_column("jobs", sa.Column("single_flight_key", sa.String(64)))
    op.add_column("jobs", sa.Column("batch_position", sa.Integer()))
    op.add_column("jobs", sa.Column("leader_job_id", sa.Uuid(), sa.ForeignKey("jobs.id")))
    op.create_index("ix_jobs_in_flight_key", "jobs", ["single_flight_key"],
                    postgresql_where=sa.text("status IN ('batched', 'running') "
                                             "AND leader_job_id IS NULL"))
    op.create_index("ix_jobs_leader", "jobs", ["leader_job_id"],
                    postgresql_where=sa.text("leader_job_id IS NOT NULL"))
    op.add_column("batches", sa.Column("prefix_key", sa.String(64)))
    op.add_column("batches", sa.Column("shared_prefix_tokens", sa.Integer(),
                                       server_default="0", nullable=False))
    op.add_column("batches", sa.Column("target_worker", sa.String(200)))
    op.add_column("ledger_entries", sa.Column("served_by", sa.String(20),
                                              server_default="engine", nullable=False))
    op.add_column("ledger_entries", sa.Column("source_job_id", sa.Uuid()))
    op.add_column("ledger_entries", sa.Column("single_flight_saved_usd", MONEY, server_default="0",
                                              nullable=False))
    op.create_table(
        "workers",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
    )
    op.create_index("ix_workers_model_heartbeat", "workers", ["model", "heartbeat_at"])


def downgrade() -> None:
    op.drop_table("workers")
    for column in ("single_flight_saved_usd", "source_job_id", "served_by"):
        op.drop_column("ledger_entries", column)
    for column in ("target_worker", "shared_prefix_tokens", "prefix_key"):
        op.drop_column("batches", column)
    op.drop_index("ix_jobs_leader", "jobs")
    op.drop_index("ix_jobs_in_flight_key", "jobs")
    for column in ("leader_job_id", "batch_position", "single_flight_key", "deadline_at"):
        op.drop_column("jobs", column)
