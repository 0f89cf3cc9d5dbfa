"""decode context: a calibration's decode seconds per token of context

On a CPU, attention over the context is a large part of a small model's decode step, so a
long prompt decodes more slowly per output token than a short one. The calibration probe
now measures that as `calibrations.decode_s_per_context_token` (seconds per token of context
per decoded token). Nullable: a calibration stored before it was measured reads as 0, the
model it was made for (decoding independent of the context).

Revision ID: 0030_decode_context
Revises: 0029_jobs_index_trim
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0030_decode_context"
down_revision: str | None = "0029_jobs_index_trim"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("calibrations",
                  sa.Column("decode_s_per_context_token", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("calibrations", "decode_s_per_context_token")
