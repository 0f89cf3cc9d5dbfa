"""Report query time over a large ledger, and what keeping the daily rollup costs at record
time. Loads N ledger rows (with their jobs and results) spread over 30 days, 5 tenants, 2
models and 20 features into a database of its own, then:

- times each report query (the by-feature month report from the rollup, the same report
  straight from the ledger for comparison, top drivers, two windows compared, the
  max_tokens audit and retry storms from their rollups, and both audits' queries straight
  from the ledger as they were before the rollups) several times: p50/p95 ms;
- times inserting a worker-sized batch of ledger rows (64) with no rollup trigger, with
  the cost rollup's alone, and with both (cost + audits), in turn, so all see the same
  load: the record-time overhead.

Checks that the rollup's month totals equal the ledger's sums to the last digit, that the
max_tokens audit's totals equal the ledger's engine rows, that its percentiles are never
below the exact ones (and by how much above), and that retry storms find the same requests
and sends as the ledger query.

    .venv/bin/python bench/report_bench.py [--rows 1000000] [--repeats 7]
        [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DAYS = 30
TENANTS = 5
FEATURES = 20
CHUNK = 50_000


def _load(conn: psycopg.Connection, rows: int, first_day: date) -> None:
    """Tenants, one submission each, then jobs, results and ledger rows in chunks (one
    INSERT per chunk, so the rollup trigger sums a chunk at a time)."""
    conn.execute("INSERT INTO tenants (id, name) SELECT gen_random_uuid(), 'tenant-' || i "
                 "FROM generate_series(1, %s) i", [TENANTS])
    conn.execute("INSERT INTO submissions (id, tenant_id, kind, request_hash, total_jobs) "
                 "SELECT gen_random_uuid(), id, 'bulk', 'x', 0 FROM tenants")
    start = datetime.combine(first_day, datetime.min.time(), tzinfo=UTC)
    for offset in range(0, rows, CHUNK):
        n = min(CHUNK, rows - offset)
        conn.execute(f"""
            CREATE TEMP TABLE chunk ON COMMIT DROP AS
            SELECT gen_random_uuid() AS id, g AS i,
                   (SELECT array_agg(id ORDER BY name) FROM tenants)[1 + g %% {TENANTS}]
                       AS tenant,
                   %(start)s::timestamptz
                       + (g::float8 / %(rows)s::int) * interval '{DAYS} days' AS at,
                   CASE WHEN g %% 3 = 0 THEN 'large' ELSE 'small' END AS model,
                   'feature-' || (g * 7 %% {FEATURES}) AS feature,
                   8 + (g * 13 %% 120) AS out_tokens,
                   (1 + g %% 1000) * 0.0000001 AS cost
            FROM generate_series(%(first)s::int, %(last)s::int) g""",
                     {"start": start, "rows": rows, "first": offset, "last": offset + n - 1})
        conn.execute("""
            INSERT INTO jobs (id, submission_id, tenant_id, line_no, model, request, tags,
                              status, estimated_tokens, single_flight_key, created_at,
                              finished_at)
            SELECT c.id, s.id, c.tenant, c.i, c.model,
                   jsonb_build_object('sampling', jsonb_build_object('max_tokens', 128)),
                   jsonb_build_object('feature', c.feature), 'succeeded', 200,
                   -- every 100th job repeats one of 5 requests (a retry storm)
                   CASE WHEN c.i % 100 = 0 THEN md5('hot' || (c.i % 500)) ELSE md5(c.i::text)
                   END, c.at, c.at
            FROM chunk c JOIN submissions s ON s.tenant_id = c.tenant""")
        conn.execute("""
            INSERT INTO results (job_id, text, finish_reason, prompt_tokens, cached_tokens,
                                 output_tokens)
            SELECT id, '', CASE WHEN out_tokens >= 126 THEN 'length' ELSE 'stop' END, 200, 64,
                   out_tokens FROM chunk""")
        conn.execute("""
            INSERT INTO ledger_entries (job_id, tenant_id, submission_id, model, input_tokens,
                cached_tokens, output_tokens, engine_seconds, cost_usd, list_cost_usd,
                naive_cost_usd, saving_prefix_cache_usd, saving_batching_usd, created_at)
            SELECT c.id, c.tenant, s.id, c.model, 200, 64, c.out_tokens, 0.01, c.cost,
                   c.cost * 10, c.cost * 3, c.cost, c.cost, c.at
            FROM chunk c JOIN submissions s ON s.tenant_id = c.tenant""")
        conn.commit()
        print(f"  loaded {offset + n:,} rows", file=sys.stderr, flush=True)


# The two audits' queries as they read the ledger before their rollups (for comparison).
_RAW_AUDIT = """
    SELECT t.name, j.tags ->> 'feature', count(*),
           count(*) FILTER (WHERE r.finish_reason = 'length'),
           percentile_disc(0.5) WITHIN GROUP (ORDER BY l.output_tokens),
           percentile_disc(0.95) WITHIN GROUP (ORDER BY l.output_tokens),
           percentile_disc(0.99) WITHIN GROUP (ORDER BY l.output_tokens),
           sum(l.output_tokens), sum(l.cost_usd)
    FROM ledger_entries l JOIN jobs j ON j.id = l.job_id JOIN tenants t ON t.id = l.tenant_id
    LEFT JOIN results r ON r.job_id = l.job_id
    WHERE l.created_at >= :a AND l.created_at < :b AND l.served_by = 'engine'
    GROUP BY 1, 2"""
_RAW_STORMS = """
    SELECT l.tenant_id, j.single_flight_key, count(*)
    FROM ledger_entries l JOIN jobs j ON j.id = l.job_id
    WHERE l.created_at >= :a AND l.created_at < :b AND j.single_flight_key IS NOT NULL
      AND j.cascade_of IS NULL
    GROUP BY 1, 2 HAVING count(*) >= 3"""


def _check_audits(audit: list[Any], raw_audit: list[Any], storms: Any,
                  raw_storms: list[Any]) -> str:
    """Totals equal, percentiles never below the exact ones; returns how far above."""
    exact = {(r[0], r[1]): r for r in raw_audit}
    assert len(exact) == len(audit)
    assert sum(line.outputs.jobs for line in audit) == sum(r[2] for r in raw_audit)
    worst = 0.0
    for line in audit:
        o = line.outputs
        row = exact[(o.tenant, o.feature)]
        assert (o.jobs, o.length_jobs, o.output_tokens) == (row[2], row[3], row[7])
        assert o.cost_usd == Decimal(row[8])
        for read, true in ((o.p50_output, row[4]), (o.p95_output, row[5]),
                           (o.p99_output, row[6])):
            assert read >= true, (o.feature, read, true)
            worst = max(worst, (read - true) / true)
        if line.recommended_max_tokens is not None:
            assert line.recommended_max_tokens >= row[6]
    # A request's storm is split by model and feature; the requests and sends are the same.
    assert {s.key for s in storms.requests} == {str(r[1]) for r in raw_storms}
    assert sum(s.sends for s in storms.requests) == sum(r[2] for r in raw_storms)
    return (f"totals equal; {len(audit)} tenant/feature lines; percentiles at most "
            f"{worst:.1%} above the exact ones; {len(storms.requests)} storms, the same "
            f"requests and sends as the ledger query")


def _timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - began) * 1000)
    samples.sort()
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    return statistics.median(samples), p95


def _batch_insert(conn: psycopg.Connection, at: datetime) -> None:
    """One worker batch: 64 jobs, their results and ledger rows, in one transaction."""
    conn.execute("""
        CREATE TEMP TABLE batch ON COMMIT DROP AS
        SELECT gen_random_uuid() AS id, g AS i, t.id AS tenant, s.id AS submission
        FROM generate_series(1, 64) g
        CROSS JOIN LATERAL (SELECT id FROM tenants ORDER BY name LIMIT 1) t
        JOIN submissions s ON s.tenant_id = t.id""")
    conn.execute("""
        INSERT INTO jobs (id, submission_id, tenant_id, line_no, model, request, tags, status,
                          estimated_tokens, single_flight_key, created_at)
        SELECT id, submission, tenant, i, 'small', '{"sampling": {"max_tokens": 64}}',
               jsonb_build_object('feature', 'feature-' || (i %% 5)), 'succeeded', 100,
               md5(id::text), %s
        FROM batch""", [at])
    conn.execute("INSERT INTO results (job_id, text, finish_reason, prompt_tokens, "
                 "cached_tokens, output_tokens) SELECT id, '', 'stop', 100, 0, 20 FROM batch")
    conn.execute("""
        INSERT INTO ledger_entries (job_id, tenant_id, submission_id, model, input_tokens,
            cached_tokens, output_tokens, engine_seconds, cost_usd, list_cost_usd,
            naive_cost_usd, created_at)
        SELECT id, tenant, submission, 'small', 100, 0, 20, 0.01, 0.000001, 0.00001,
               0.000001, %s FROM batch""", [at])
    conn.commit()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batches", type=int, default=40,
                        help="64-row batches timed with the rollup trigger on and off")
    parser.add_argument("--admin-url", default=os.environ.get(
        "PENNY_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()

    from sqlalchemy import text

    from ledger.cost_report import group, top_drivers, total
    from models.report_queries import day_start, rollup_rows
    from models.report_views import Window, max_tokens_audit, retry_storms
    from penny.database import make_engine, make_sessionmaker, migrate

    name = f"penny_report_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{args.admin_url.rpartition('/')[0]}/{name}"
    try:
        migrate(url)
        first_day = datetime.now(UTC).date() - timedelta(days=DAYS)
        end = first_day + timedelta(days=DAYS + 1)
        with psycopg.connect(url) as conn:
            began = time.perf_counter()
            _load(conn, args.rows, first_day)
            load_s = time.perf_counter() - began
            conn.execute("ANALYZE")
            conn.commit()
        engine = make_engine(url, pool_size=2)
        sessions = make_sessionmaker(engine)
        since, until = day_start(first_day), day_start(end)

        def by_feature() -> object:
            with sessions() as s:
                return group(rollup_rows(s, first_day, end, by=("feature",)), "feature")

        def raw_by_feature() -> object:
            with sessions() as s:
                return s.execute(text(
                    "SELECT j.tags ->> 'feature', count(*), sum(l.cost_usd), "
                    "sum(l.naive_cost_usd) FROM ledger_entries l JOIN jobs j "
                    "ON j.id = l.job_id WHERE l.created_at >= :a AND l.created_at < :b "
                    "GROUP BY 1"), {"a": since, "b": until}).all()

        def drivers() -> object:
            with sessions() as s:
                return top_drivers(rollup_rows(s, first_day, end,
                                               by=("tenant", "model", "feature")), 10)

        def compare_windows() -> object:
            middle = first_day + timedelta(days=DAYS // 2)
            with sessions() as s:
                return (total(rollup_rows(s, first_day, middle)),
                        total(rollup_rows(s, middle, end)))

        month = Window(first_day, end)

        def audit() -> list[Any]:
            with sessions() as s:
                return max_tokens_audit(s, month, 1.25, tenant_id=None, feature_tag="feature")

        def raw_audit() -> list[Any]:
            with sessions() as s:
                return list(s.execute(text(_RAW_AUDIT), {"a": since, "b": until}).all())

        def storms() -> Any:
            with sessions() as s:
                return retry_storms(s, month, 3, timedelta(days=DAYS + 1), tenant_id=None,
                                    feature_tag="feature")

        def raw_storms() -> list[Any]:
            with sessions() as s:
                return list(s.execute(text(_RAW_STORMS), {"a": since, "b": until}).all())

        with sessions() as s:
            rollup_total = total(rollup_rows(s, first_day, end))
            rollup_rows_count = int(s.execute(text("SELECT count(*) FROM ledger_daily"))
                                    .scalar_one())
            audit_rows = s.execute(text(
                "SELECT (SELECT count(*) FROM ledger_output_daily), "
                "(SELECT count(*) FROM request_sends), (SELECT count(*) FROM request_repeats)"
            )).one()
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*), sum(cost_usd), sum(naive_cost_usd) "
                               "FROM ledger_entries").fetchone()
            assert row is not None
            ledger_rows, ledger_cost, ledger_naive = row
        assert rollup_total.jobs == ledger_rows
        assert rollup_total.cost_usd == Decimal(ledger_cost), "rollup cost != ledger cost"
        assert rollup_total.savings.naive_cost_usd == Decimal(ledger_naive)
        audit_error = _check_audits(audit(), raw_audit(), storms(), raw_storms())

        results = []
        quick = args.repeats
        for label, fn, repeats in (
                ("by-feature month report (rollup)", by_feature, quick),
                ("top 10 drivers (rollup)", drivers, quick),
                ("two windows compared (rollup)", compare_windows, quick),
                ("by-feature month, straight from the ledger", raw_by_feature, 3),
                ("max_tokens audit (output rollup)", audit, quick),
                ("retry storms (request sends + rollup)", storms, quick),
                ("max_tokens audit, straight from the ledger", raw_audit, 3),
                ("repeated requests, straight from the ledger", raw_storms, 3)):
            p50, p95 = _timed(fn, repeats)
            results.append((label, repeats, p50, p95))

        timed: dict[str, list[float]] = {"none": [], "cost": [], "cost + audits": []}
        with psycopg.connect(url) as conn:
            at = datetime.now(UTC)
            for i in range(args.batches * len(timed)):
                label = list(timed)[i % len(timed)]
                for trigger, on in (("ledger_daily_add", label != "none"),
                                    ("ledger_audits_add", label == "cost + audits")):
                    conn.execute(f"ALTER TABLE ledger_entries "
                                 f"{'ENABLE' if on else 'DISABLE'} TRIGGER {trigger}")
                conn.commit()
                began = time.perf_counter()
                _batch_insert(conn, at)
                timed[label].append((time.perf_counter() - began) * 1000)
            conn.execute("ALTER TABLE ledger_entries ENABLE TRIGGER ALL")
            conn.commit()
        engine.dispose()
    finally:
        with psycopg.connect(args.admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    print(f"command: python bench/report_bench.py --rows {args.rows} --repeats {args.repeats}"
          f" --batches {args.batches}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, "
          f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}; "
          f"Postgres {_server_version(args.admin_url)}")
    print(f"loaded {ledger_rows:,} ledger rows (+ jobs, results) in {load_s:.0f} s; "
          f"rollup rows for the month: {rollup_rows_count:,}; "
          f"rollup totals == ledger sums: yes (cost ${rollup_total.cost_usd:f})")
    print(f"audit rollups: {audit_rows[0]:,} output-histogram rows, {audit_rows[1]:,} "
          f"request_sends rows, {audit_rows[2]:,} request_repeats rows")
    print()
    print(f"| {'rows':>9} | {'query':<44} | runs | {'p50 ms':>8} | {'p95 ms':>8} |")
    print(f"|{'-' * 11}|{'-' * 46}|------|{'-' * 10}|{'-' * 10}|")
    for label, repeats, p50, p95 in results:
        print(f"| {ledger_rows:>9,} | {label:<44} | {repeats:>4} | {p50:>8.1f} | {p95:>8.1f} |")
    print()
    print(f"max_tokens audit from buckets vs exact percentiles: {audit_error}")
    print()
    p50 = {label: statistics.median(samples) for label, samples in timed.items()}
    print(f"record time, one 64-job batch (jobs + results + ledger, one transaction), "
          f"{args.batches} each, in turn:")
    for label, value in p50.items():
        print(f"  triggers: {label:<13} p50 {value:.2f} ms  "
              f"({value / p50['none']:.2f}x, {(value - p50['none']) / 64 * 1000:.0f} us "
              f"per ledger row over none)")


def _server_version(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


if __name__ == "__main__":
    main()
