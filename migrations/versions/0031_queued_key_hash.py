"""queued key hash: the queued copies' single-flight key index becomes a hash index

Every job a file queues enters `ix_jobs_queued_key`. Its keys are SHA-256 digests, random,
so as a B-tree each new entry lands on a random leaf after a walk of string comparisons,
and the index (66 bytes of key per entry) soon outgrows shared buffers on a large file.
Its only reader looks keys up by equality (`attach_queued_copies`: `single_flight_key IN
(...)`, a bitmap index scan either way), which a hash index answers with a 4-byte hash per
entry and no comparisons: on 309,514 queued jobs it is 10 MiB instead of 36 MiB.

Revision ID: 0031_queued_key_hash
Revises: 0030_decode_context
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0031_queued_key_hash"
down_revision: str | None = "0030_decode_context"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_QUEUED_WITH_KEY = sa.text("status = 'queued' AND single_flight_key IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_jobs_queued_key", table_name="jobs", postgresql_where=_QUEUED_WITH_KEY)
    op.create_index("ix_jobs_queued_key", "jobs", ["single_flight_key"],
                    postgresql_using="hash", postgresql_where=_QUEUED_WITH_KEY)


def downgrade() -> None:
    op.drop_index("ix_jobs_queued_key", table_name="jobs", postgresql_where=_QUEUED_WITH_KEY)
    op.create_index("ix_jobs_queued_key", "jobs", ["single_flight_key"],
                    postgresql_where=_QUEUED_WITH_KEY)
