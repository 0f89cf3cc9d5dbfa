"""ledger costing: versioned price cards and calibrations, the naive counterfactual and its
attribution by mechanism on every ledger row, and an append-only ledger

Revision ID: 0012_ledger_costing
Revises: 0010_result_cache
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012_ledger_costing"
down_revision: str | None = "0011_bulk_intake"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(20, 10)
MECHANISMS = ("exact_cache", "semantic_cache", "single_flight", "prefix_cache", "batching",
              "routing", "output_limit")
SAVINGS = [f"saving_{m}_usd" for m in MECHANISMS]
ADDS_UP = ("naive_cost_usd - cost_usd = " + " + ".join(SAVINGS) + " + unexplained_usd")


def upgrade() -> None:
    op.create_table(
        "price_cards",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("engine_hour_usd", MONEY, nullable=False),
        sa.Column("list_input_usd_per_mtok", MONEY),
        sa.Column("list_cached_input_usd_per_mtok", MONEY),
        sa.Column("list_output_usd_per_mtok", MONEY),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.UniqueConstraint("model", "version", name="uq_price_cards_model_version"),
    )
    op.create_table(
        "calibrations",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("request_overhead_s", sa.Float(), nullable=False),
        sa.Column("prefill_s_per_token", sa.Float(), nullable=False),
        sa.Column("decode_s_per_token_bs1", sa.Float(), nullable=False),
        sa.Column("decode_s_per_token_full", sa.Float(), nullable=False),
        sa.Column("full_batch_jobs", sa.Integer(), nullable=False),
        sa.Column("machine", postgresql.JSONB(), nullable=False),
        sa.Column("engine_settings", postgresql.JSONB(), nullable=False),
        sa.Column("samples", postgresql.JSONB(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.UniqueConstraint("model", "version", name="uq_calibrations_model_version"),
    )
    op.add_column("ledger_entries", sa.Column(
        "price_card_id", sa.BigInteger(), sa.ForeignKey("price_cards.id")))
    op.add_column("ledger_entries", sa.Column(
        "calibration_id", sa.BigInteger(), sa.ForeignKey("calibrations.id")))
    op.add_column("ledger_entries", sa.Column("baseline_model", sa.String(200)))
    op.add_column("ledger_entries", sa.Column("outcome", sa.String(20),
                                              server_default="succeeded", nullable=False))
    for column in ("naive_cost_usd", *SAVINGS, "unexplained_usd"):
        op.add_column("ledger_entries", sa.Column(column, MONEY, server_default="0",
                                                  nullable=False))
    # Rows written before the counterfactual existed: their naive cost is what they cost
    # plus what single-flight or the cache saved, so their parts add up like every new row.
    op.execute("UPDATE ledger_entries SET naive_cost_usd = cost_usd + single_flight_saved_usd"
               " + cache_saved_usd, saving_single_flight_usd = single_flight_saved_usd,"
               " saving_exact_cache_usd = cache_saved_usd")
    op.create_check_constraint("ck_ledger_entries_attribution_adds_up", "ledger_entries",
                               ADDS_UP)
    # Append-only: a billed row is never changed or removed. (TRUNCATE, an operator's
    # deliberate reset, is not a row change and stays possible.)
    op.execute("""
        CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'ledger_entries is append-only: % refused', TG_OP
                USING ERRCODE = 'restrict_violation';
        END $$""")
    op.execute("""
        CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
        FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only()""")


def downgrade() -> None:
    op.execute("DROP TRIGGER ledger_entries_append_only ON ledger_entries")
    op.execute("DROP FUNCTION ledger_entries_append_only()")
    op.drop_constraint("ck_ledger_entries_attribution_adds_up", "ledger_entries")
    for column in ("naive_cost_usd", *SAVINGS, "unexplained_usd", "outcome", "baseline_model",
                   "calibration_id", "price_card_id"):
        op.drop_column("ledger_entries", column)
    op.drop_table("calibrations")
    op.drop_table("price_cards")
