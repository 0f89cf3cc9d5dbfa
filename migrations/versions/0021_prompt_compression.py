"""prompt compression and the rest of the request surface: the ledger attributes what
opt-in prompt compression saved; results keep the prompt's size before compression, the
answer's token log-probabilities and the further samples of an n > 1 request

A new saving column, and the "parts add up" check rebuilt to include it. Adding a column
with a constant default rewrites no row, so the append-only trigger is not involved;
every existing row gets 0 and still adds up. The result columns are null for every job
that did not ask for these; the result cache keeps them too, so a hit answers the same.

Revision ID: 0021_prompt_compression
Revises: 0018_intake_speed
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0021_prompt_compression"
down_revision: str | None = "0018_intake_speed"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(20, 10)
CHECK = "ck_ledger_entries_attribution_adds_up"
BEFORE = ("exact_cache", "semantic_cache", "single_flight", "prefix_cache", "batching",
          "routing", "output_limit")
AFTER = (*BEFORE, "compression")


def _adds_up(mechanisms: Sequence[str]) -> str:
    savings = " + ".join(f"saving_{m}_usd" for m in mechanisms)
    return f"naive_cost_usd - cost_usd = {savings} + unexplained_usd"


RESULT_TABLES = ("results", "result_cache")


def _result_columns() -> list[sa.Column[object]]:
    return [sa.Column("original_prompt_tokens", sa.Integer()),
            sa.Column("token_logprobs", postgresql.JSONB()),
            sa.Column("choices", postgresql.JSONB())]


def upgrade() -> None:
    for table in RESULT_TABLES:
        for column in _result_columns():
            op.add_column(table, column)
    op.add_column("ledger_entries", sa.Column("saving_compression_usd", MONEY,
                                              server_default="0", nullable=False))
    op.drop_constraint(CHECK, "ledger_entries")
    op.create_check_constraint(CHECK, "ledger_entries", _adds_up(AFTER))


def downgrade() -> None:
    # Rows with a compression saving would no longer add up without it; refuse rather
    # than rewrite an append-only ledger.
    op.drop_constraint(CHECK, "ledger_entries")
    op.create_check_constraint(CHECK, "ledger_entries", _adds_up(BEFORE))
    op.drop_column("ledger_entries", "saving_compression_usd")
    for table in RESULT_TABLES:
        for column in _result_columns():
            op.drop_column(table, column.name)
