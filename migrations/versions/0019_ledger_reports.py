"""ledger reports: a per-day rollup of the ledger kept by a trigger, per-tag max_tokens
caps, and what retry-storm detection reads (client retry counts, idempotent replays)

The rollup (`ledger_daily`) is added to in the same statement that inserts ledger rows: a
statement-level trigger sums the new rows by day, tenant, model, feature tag, how they were
served and their outcome, and adds the sums to the rollup. The ledger is append-only, so the
rollup only ever adds; a report over a month reads a few hundred rollup rows, not a million
ledger rows. The feature tag's key is the session's `penny.report_feature_tag` (penny sets it
on every connection from PENNY_REPORT_FEATURE_TAG), `feature` when unset.

Revision ID: 0019_ledger_reports
Revises: 0018_intake_speed
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019_ledger_reports"
down_revision: str | None = "0023_routing_policy"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(20, 10)
MECHANISMS = ("exact_cache", "semantic_cache", "single_flight", "prefix_cache", "batching",
              "routing", "output_limit", "compression")
MONEY_SUMS = ("cost_usd", "list_cost_usd", "naive_cost_usd",
              *(f"saving_{m}_usd" for m in MECHANISMS), "unexplained_usd")
TOKEN_SUMS = ("input_tokens", "cached_tokens", "output_tokens")
KEYS = ("day", "tenant_id", "model", "feature", "served_by", "outcome")
COUNTS = ("jobs", "requests", "length_jobs", "capped_jobs")
ADDED = (*COUNTS, *TOKEN_SUMS, "engine_seconds", *MONEY_SUMS)


def _rollup_insert(source: str, tag: str) -> str:
    """Sum `source` (rows shaped like ledger_entries) into ledger_daily. Groups are added
    in key order, so two transactions adding to the same rollup rows wait for each other
    instead of deadlocking."""
    sums = ", ".join(f"sum(n.{c})" for c in (*TOKEN_SUMS, "engine_seconds", *MONEY_SUMS))
    updates = ", ".join(f"{c} = d.{c} + EXCLUDED.{c}" for c in ADDED)
    return f"""
        INSERT INTO ledger_daily AS d ({", ".join(KEYS)}, {", ".join(ADDED)})
        SELECT (n.created_at AT TIME ZONE 'UTC')::date, n.tenant_id, n.model,
               left(coalesce(j.tags ->> {tag}, ''), 200), n.served_by, n.outcome,
               count(*), count(*) FILTER (WHERE j.cascade_of IS NULL),
               count(*) FILTER (WHERE r.finish_reason = 'length'),
               count(*) FILTER (WHERE j.request -> 'sampling' ? 'requested_max_tokens'),
               {sums}
        FROM {source} n JOIN jobs j ON j.id = n.job_id LEFT JOIN results r ON r.job_id = n.job_id
        GROUP BY 1, 2, 3, 4, 5, 6
        ORDER BY 1, 2, 3, 4, 5, 6
        ON CONFLICT ({", ".join(KEYS)}) DO UPDATE SET {updates}"""


def upgrade() -> None:
    op.create_table(
        "ledger_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("feature", sa.String(200), nullable=False),
        sa.Column("served_by", sa.String(20), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        *(sa.Column(c, sa.BigInteger(), nullable=False, server_default="0")
          for c in (*COUNTS, *TOKEN_SUMS)),
        sa.Column("engine_seconds", sa.Float(), nullable=False, server_default="0"),
        *(sa.Column(c, sa.Numeric(24, 10), nullable=False, server_default="0")
          for c in MONEY_SUMS),
        sa.PrimaryKeyConstraint(*KEYS, name="pk_ledger_daily"),
    )
    op.create_index("ix_ledger_daily_tenant_day", "ledger_daily", ["tenant_id", "day"])
    op.execute(f"""
        CREATE FUNCTION ledger_daily_add() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            tag text := coalesce(nullif(current_setting('penny.report_feature_tag', true), ''),
                                 'feature');
        BEGIN
            {_rollup_insert("new_rows", "tag")};
            RETURN NULL;
        END $$""")
    op.execute("""
        CREATE TRIGGER ledger_daily_add AFTER INSERT ON ledger_entries
        REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION ledger_daily_add()""")
    op.execute(_rollup_insert("ledger_entries", "'feature'"))

    op.create_table(
        "max_tokens_caps",
        sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("feature", sa.String(200), nullable=False),
        sa.Column("max_tokens", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "feature", name="pk_max_tokens_caps"),
    )
    op.add_column("jobs", sa.Column("client_retry_count", sa.Integer()))
    op.add_column("submissions", sa.Column("idempotent_replays", sa.Integer(),
                                           nullable=False, server_default="0"))
    op.add_column("submissions", sa.Column("last_replayed_at", sa.DateTime(timezone=True)))
    # Reports' failure rate counts failed jobs per window; only failed rows take an entry.
    op.create_index("ix_jobs_failed_finished", "jobs", ["tenant_id", "finished_at"],
                    postgresql_where=sa.text("status = 'failed'"))


def downgrade() -> None:
    op.drop_index("ix_jobs_failed_finished", table_name="jobs")
    op.drop_column("submissions", "last_replayed_at")
    op.drop_column("submissions", "idempotent_replays")
    op.drop_column("jobs", "client_retry_count")
    op.drop_table("max_tokens_caps")
    op.execute("DROP TRIGGER ledger_daily_add ON ledger_entries")
    op.execute("DROP FUNCTION ledger_daily_add()")
    op.drop_table("ledger_daily")
