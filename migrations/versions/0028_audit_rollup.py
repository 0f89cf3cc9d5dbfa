"""audit rollups: output-token histograms for the max_tokens audit, and what retry-storm
detection reads (sends per request, the repeats' jobs, SDK retries per day)

The two audits read a month of ledger rows (seconds per million). Like `ledger_daily`, these
tables are added to by statement-level triggers in the statement that inserts ledger rows:

- `ledger_output_daily`: engine-run jobs per day, tenant, model, feature, output-token
  bucket and requested-max_tokens bucket (`penny_token_bucket`, the scheme of
  `ledger.output_histogram`), with exact sums of jobs, length stops, capped jobs, output
  tokens, requested max_tokens and cost;
- `request_sends`: per tenant and single-flight key, how many times the request was billed,
  first and last time, and the job of one send; `request_repeats` holds the jobs of every
  other send. Storm detection reads the keys sent often enough (a partial index) and then
  only their sends, through the ledger's unique job index;
- `client_retries_daily`: billed jobs whose request carried an SDK retry count, per day,
  tenant and feature.

All are back-filled from existing ledger rows.

Failed engine calls: `batches.failover_seconds` carries the seconds of engine calls that
raised on a batch's jobs (its share of the batch it was split from), and the ledger gains
`saving_failover_usd` (minus what those seconds cost a job's row): the "parts add up"
check and the daily rollup (column and trigger function) are rebuilt to include it.

Revision ID: 0028_audit_rollup
Revises: 0019_ledger_reports
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0028_audit_rollup"
down_revision: str | None = "0019_ledger_reports"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FEATURE_TAG = ("coalesce(nullif(current_setting('penny.report_feature_tag', true), ''), "
                "'feature')")
# The max_tokens a job asked for (before a cap lowered it); a value that is not a plain
# number (never written by intake) counts as none rather than failing the recording.
_REQUESTED = """(CASE WHEN r.asked ~ '^[0-9]{1,9}$' THEN r.asked::int END)"""

_BUCKET_FUNCTION = """
    CREATE FUNCTION penny_token_bucket(tokens integer) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
        SELECT CASE WHEN tokens <= 16 THEN tokens - 1
               ELSE ((tokens - 1) >> (29 - position(B'1' IN (tokens - 1)::bit(32))))
                    << (29 - position(B'1' IN (tokens - 1)::bit(32)))
               END
    $$"""


def _outputs_insert(source: str, tag: str) -> str:
    """Sum the engine-run rows of `source` into ledger_output_daily, in key order (writers
    wait for each other instead of deadlocking)."""
    return f"""
        INSERT INTO ledger_output_daily AS d (day, tenant_id, model, feature, output_bucket,
            requested_bucket, jobs, length_jobs, capped_jobs, output_tokens,
            requested_max_tokens, max_output, min_requested, max_requested, cost_usd)
        SELECT day, tenant_id, model, feature, penny_token_bucket(output_tokens),
               penny_token_bucket(requested), count(*),
               count(*) FILTER (WHERE finish_reason = 'length'), count(*) FILTER (WHERE capped),
               sum(output_tokens), sum(requested), max(output_tokens), min(requested),
               max(requested), sum(cost_usd)
        FROM (
            SELECT (n.created_at AT TIME ZONE 'UTC')::date AS day, n.tenant_id, n.model,
                   left(coalesce(j.tags ->> {tag}, ''), 200) AS feature, n.output_tokens,
                   {_REQUESTED} AS requested, res.finish_reason,
                   j.request -> 'sampling' ? 'requested_max_tokens' AS capped, n.cost_usd
            FROM {source} n
            JOIN jobs j ON j.id = n.job_id
            CROSS JOIN LATERAL (SELECT coalesce(
                j.request -> 'sampling' ->> 'requested_max_tokens',
                j.request -> 'sampling' ->> 'max_tokens') AS asked) r
            LEFT JOIN results res ON res.job_id = n.job_id
            WHERE n.served_by = 'engine'
        ) e
        WHERE requested IS NOT NULL
        GROUP BY 1, 2, 3, 4, 5, 6
        ORDER BY 1, 2, 3, 4, 5, 6
        ON CONFLICT (day, tenant_id, model, feature, output_bucket, requested_bucket)
        DO UPDATE SET jobs = d.jobs + EXCLUDED.jobs,
                      length_jobs = d.length_jobs + EXCLUDED.length_jobs,
                      capped_jobs = d.capped_jobs + EXCLUDED.capped_jobs,
                      output_tokens = d.output_tokens + EXCLUDED.output_tokens,
                      requested_max_tokens = d.requested_max_tokens
                                             + EXCLUDED.requested_max_tokens,
                      max_output = greatest(d.max_output, EXCLUDED.max_output),
                      min_requested = least(d.min_requested, EXCLUDED.min_requested),
                      max_requested = greatest(d.max_requested, EXCLUDED.max_requested),
                      cost_usd = d.cost_usd + EXCLUDED.cost_usd"""


def _sends_insert(source: str) -> str:
    """Count `source`'s sends per request; every send but the one the request's row names
    goes to request_repeats. The row named is read back after the upsert has locked it, so
    two transactions billing the same new request at once still file every send."""
    return f"""
        WITH keyed AS (
            SELECT n.id, n.job_id, n.tenant_id, j.single_flight_key AS key, n.created_at
            FROM {source} n JOIN jobs j ON j.id = n.job_id
            WHERE j.single_flight_key IS NOT NULL AND j.cascade_of IS NULL
        ), counted AS (
            INSERT INTO request_sends AS s (tenant_id, key, sends, first_at, last_at,
                                            first_job_id)
            SELECT tenant_id, key, count(*), min(created_at), max(created_at),
                   (array_agg(job_id ORDER BY created_at, id))[1]
            FROM keyed GROUP BY tenant_id, key ORDER BY tenant_id, key
            ON CONFLICT (tenant_id, key) DO UPDATE
            SET sends = s.sends + EXCLUDED.sends,
                first_at = least(s.first_at, EXCLUDED.first_at),
                last_at = greatest(s.last_at, EXCLUDED.last_at)
            RETURNING s.tenant_id, s.key, s.first_job_id
        )
        INSERT INTO request_repeats (job_id, tenant_id, key)
        SELECT k.job_id, k.tenant_id, k.key
        FROM keyed k JOIN counted c ON c.tenant_id = k.tenant_id AND c.key = k.key
        WHERE k.job_id <> c.first_job_id"""


def _retries_insert(source: str, tag: str) -> str:
    return f"""
        INSERT INTO client_retries_daily AS d (day, tenant_id, feature, retried_jobs,
            max_client_retry_count, cost_usd, naive_cost_usd)
        SELECT (n.created_at AT TIME ZONE 'UTC')::date, n.tenant_id,
               left(coalesce(j.tags ->> {tag}, ''), 200), count(*),
               max(j.client_retry_count), sum(n.cost_usd), sum(n.naive_cost_usd)
        FROM {source} n JOIN jobs j ON j.id = n.job_id
        WHERE j.client_retry_count > 0
        GROUP BY 1, 2, 3
        ORDER BY 1, 2, 3
        ON CONFLICT (day, tenant_id, feature) DO UPDATE
        SET retried_jobs = d.retried_jobs + EXCLUDED.retried_jobs,
            max_client_retry_count = greatest(d.max_client_retry_count,
                                              EXCLUDED.max_client_retry_count),
            cost_usd = d.cost_usd + EXCLUDED.cost_usd,
            naive_cost_usd = d.naive_cost_usd + EXCLUDED.naive_cost_usd"""


MONEY = sa.Numeric(20, 10)
CHECK = "ck_ledger_entries_attribution_adds_up"
BEFORE = ("exact_cache", "semantic_cache", "single_flight", "prefix_cache", "batching",
          "routing", "output_limit", "compression")
AFTER = (*BEFORE, "failover")


def _adds_up(mechanisms: Sequence[str]) -> str:
    savings = " + ".join(f"saving_{m}_usd" for m in mechanisms)
    return f"naive_cost_usd - cost_usd = {savings} + unexplained_usd"


def _daily_function(mechanisms: Sequence[str]) -> str:
    """`ledger_daily_add` as migration 0019 wrote it, summing the savings of
    `mechanisms`."""
    money = ("cost_usd", "list_cost_usd", "naive_cost_usd",
             *(f"saving_{m}_usd" for m in mechanisms), "unexplained_usd")
    sums = ", ".join(f"sum(n.{c})" for c in ("input_tokens", "cached_tokens",
                                             "output_tokens", "engine_seconds", *money))
    added = ("jobs", "requests", "length_jobs", "capped_jobs", "input_tokens",
             "cached_tokens", "output_tokens", "engine_seconds", *money)
    keys = "day, tenant_id, model, feature, served_by, outcome"
    updates = ", ".join(f"{c} = d.{c} + EXCLUDED.{c}" for c in added)
    return f"""
        CREATE OR REPLACE FUNCTION ledger_daily_add() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            tag text := {_FEATURE_TAG};
        BEGIN
            INSERT INTO ledger_daily AS d ({keys}, {", ".join(added)})
            SELECT (n.created_at AT TIME ZONE 'UTC')::date, n.tenant_id, n.model,
                   left(coalesce(j.tags ->> tag, ''), 200), n.served_by, n.outcome,
                   count(*), count(*) FILTER (WHERE j.cascade_of IS NULL),
                   count(*) FILTER (WHERE r.finish_reason = 'length'),
                   count(*) FILTER (WHERE j.request -> 'sampling' ? 'requested_max_tokens'),
                   {sums}
            FROM new_rows n JOIN jobs j ON j.id = n.job_id
            LEFT JOIN results r ON r.job_id = n.job_id
            GROUP BY 1, 2, 3, 4, 5, 6
            ORDER BY 1, 2, 3, 4, 5, 6
            ON CONFLICT ({keys}) DO UPDATE SET {updates};
            RETURN NULL;
        END $$"""


def _count(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), nullable=False, server_default="0")


def upgrade() -> None:
    op.execute(_BUCKET_FUNCTION)
    keys = ("day", "tenant_id", "model", "feature", "output_bucket", "requested_bucket")
    op.create_table(
        "ledger_output_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("feature", sa.String(200), nullable=False),
        sa.Column("output_bucket", sa.Integer(), nullable=False),
        sa.Column("requested_bucket", sa.Integer(), nullable=False),
        *(_count(c) for c in ("jobs", "length_jobs", "capped_jobs", "output_tokens",
                              "requested_max_tokens")),
        sa.Column("max_output", sa.Integer(), nullable=False),
        sa.Column("min_requested", sa.Integer(), nullable=False),
        sa.Column("max_requested", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Numeric(24, 10), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint(*keys, name="pk_ledger_output_daily"),
    )
    op.create_index("ix_ledger_output_daily_tenant_day", "ledger_output_daily",
                    ["tenant_id", "day"])
    op.create_table(
        "request_sends",
        sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        _count("sends"),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_job_id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "key", name="pk_request_sends"),
    )
    # Only requests sent more than once can be a storm: they alone take an entry.
    op.create_index("ix_request_sends_repeated", "request_sends", ["last_at"],
                    postgresql_where=sa.text("sends >= 2"))
    op.create_table(
        "request_repeats",
        sa.Column("job_id", sa.Uuid(), primary_key=True),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
    )
    op.create_index("ix_request_repeats_key", "request_repeats", ["tenant_id", "key"])
    op.create_table(
        "client_retries_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("feature", sa.String(200), nullable=False),
        _count("retried_jobs"),
        sa.Column("max_client_retry_count", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Numeric(24, 10), nullable=False, server_default="0"),
        sa.Column("naive_cost_usd", sa.Numeric(24, 10), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("day", "tenant_id", "feature", name="pk_client_retries_daily"),
    )
    op.execute(f"""
        CREATE FUNCTION ledger_audits_add() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            tag text := {_FEATURE_TAG};
        BEGIN
            {_outputs_insert("new_rows", "tag")};
            {_sends_insert("new_rows")};
            {_retries_insert("new_rows", "tag")};
            RETURN NULL;
        END $$""")
    op.execute("""
        CREATE TRIGGER ledger_audits_add AFTER INSERT ON ledger_entries
        REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION ledger_audits_add()""")
    op.execute(_outputs_insert("ledger_entries", "'feature'"))
    op.execute(_sends_insert("ledger_entries"))
    op.execute(_retries_insert("ledger_entries", "'feature'"))

    op.add_column("batches", sa.Column("failover_seconds", sa.Float(), nullable=False,
                                       server_default="0"))
    op.add_column("ledger_entries", sa.Column("saving_failover_usd", MONEY, nullable=False,
                                              server_default="0"))
    op.drop_constraint(CHECK, "ledger_entries")
    op.create_check_constraint(CHECK, "ledger_entries", _adds_up(AFTER))
    op.add_column("ledger_daily", sa.Column("saving_failover_usd", sa.Numeric(24, 10),
                                            nullable=False, server_default="0"))
    op.execute(_daily_function(AFTER))


def downgrade() -> None:
    # Rows with a failover share would no longer add up without it; refuse rather than
    # rewrite an append-only ledger.
    op.execute(_daily_function(BEFORE))
    op.drop_column("ledger_daily", "saving_failover_usd")
    op.drop_constraint(CHECK, "ledger_entries")
    op.create_check_constraint(CHECK, "ledger_entries", _adds_up(BEFORE))
    op.drop_column("ledger_entries", "saving_failover_usd")
    op.drop_column("batches", "failover_seconds")
    op.execute("DROP TRIGGER ledger_audits_add ON ledger_entries")
    op.execute("DROP FUNCTION ledger_audits_add()")
    op.drop_table("client_retries_daily")
    op.drop_index("ix_request_repeats_key", table_name="request_repeats")
    op.drop_table("request_repeats")
    op.drop_index("ix_request_sends_repeated", table_name="request_sends")
    op.drop_table("request_sends")
    op.drop_index("ix_ledger_output_daily_tenant_day", table_name="ledger_output_daily")
    op.drop_table("ledger_output_daily")
    op.execute("DROP FUNCTION penny_token_bucket(integer)")
