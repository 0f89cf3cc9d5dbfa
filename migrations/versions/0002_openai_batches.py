"""OpenAI- and Anthropic-compatible batches: the files table, batch fields on submissions

Revision ID: 0002_openai_batches
Revises: 0001
Create Date: 2026-11-21 07:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_openai_batches"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMPS = ("expires_at", "cancelling_at", "expired_at", "failed_at", "deleted_at")
_STRINGS = (
    ("endpoint", 40), ("completion_window", 10), ("callback_url", 2000),
    ("input_file_id", 64), ("output_file_id", 64), ("error_file_id", 64),
)


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.String(length=40), nullable=False),
        sa.Column("filename", sa.String(length=500), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("object_key", sa.String(length=500), nullable=False),
        sa.Column("submission_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.ForeignKeyConstraint(["submission_id"], ["submissions.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_files_tenant_created", "files", ["tenant_id", "created_at"])
    for name, length in _STRINGS:
        op.add_column("submissions", sa.Column(name, sa.String(length=length), nullable=True))
    for name in _TIMESTAMPS:
        op.add_column("submissions", sa.Column(name, sa.DateTime(timezone=True), nullable=True))
    op.add_column("submissions", sa.Column(
        "batch_metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column("submissions", sa.Column(
        "errors", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column("submissions", sa.Column("output_expires_after_seconds", sa.Integer(),
                                           nullable=True))
    op.add_column("submissions", sa.Column("retry_of", sa.Uuid(), nullable=True))
    op.create_foreign_key("fk_submissions_retry_of", "submissions", "submissions",
                          ["retry_of"], ["id"])
    # The sweeper looks for open batches whose completion window ran out.
    op.create_index("ix_submissions_open_expiry", "submissions", ["expires_at"],
                    postgresql_where=sa.text("status = 'open' AND expires_at IS NOT NULL"))
    op.create_index("ix_submissions_tenant_kind_created", "submissions",
                    ["tenant_id", "kind", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_submissions_tenant_kind_created", table_name="submissions")
    op.drop_index("ix_submissions_open_expiry", table_name="submissions")
    op.drop_constraint("fk_submissions_retry_of", "submissions", type_="foreignkey")
    for name in ("retry_of", "output_expires_after_seconds", "errors", "batch_metadata",
                 *_TIMESTAMPS, *(name for name, _ in _STRINGS)):
        op.drop_column("submissions", name)
    op.drop_index("ix_files_tenant_created", table_name="files")
    op.drop_table("files")
