"""CSV intake: rows per second parsed (read, mapped and validated, nothing stored) and
rows per second into durable jobs (the upload path, `queue_csv`, committed, with the exact
result cache looked up as `POST /v1/uploads/csv` does), with the CPU each row costs in
this process and in its Postgres backend, and the peak memory of the process doing it.
Memory flat in the file's size is the point; rows/s is what it costs.

    .venv/bin/python bench/csv_intake_bench.py [--sizes-mb 10 40] [--code DIR ...]
    .venv/bin/python bench/csv_intake_bench.py --sizes-mb 1024 --scratch DIR  # 1 GB

`--code before=DIR after=DIR` runs the same measurement on other checkouts of penny (for
example the code before a change, from `git worktree add`), each on a fresh database of
its own, in the same run: read the rows side by side. Each size runs in a fresh child
process, so its peak RSS (ru_maxrss) is its own. CPU per row is robust to a busy machine
where rows/s is not: "Python" is the child's user+system time, "Postgres" its backend's
(from /proc).
The rows look like a real bulk job: an id, a prompt of ~120 characters with a comma and a
quoted line break in one row of five, a team tag, max_tokens (about 135 bytes a row).
Databases are created on the Postgres of `--admin-url` and dropped afterwards.

Nothing holds a file in memory: each is written to disk row by row (in `--scratch`, the
system's temporary directory by default: use a disk there, not a RAM-backed tmpfs, for
large sizes), streamed by the child that measures it, and deleted before the next size.
A 1 GB file is about 7.8 million rows; the Postgres data directory needs room for the
jobs they make (several GB, dropped with the database afterwards).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent


def write_csv(path: Path, size_mb: int) -> int:
    """A CSV file of about `size_mb` MB; returns its row count."""
    target = size_mb * 1024 * 1024
    rows = 0
    with path.open("wb") as out:
        out.write(b"custom_id,prompt,team,max_tokens\n")
        written = 0
        while written < target:
            if rows % 5 == 0:
                prompt = (b'"Summarise, in one line:\nthe quarterly report number %d, which '
                          b'covers sales, costs and the outlook for next year."' % rows)
            else:
                prompt = (b"Translate to French: the meeting about item %d moves to "
                          b"Thursday at ten in the small room on the second floor" % rows)
            line = b"row-%d,%s,team-%d,32\n" % (rows, prompt, rows % 13)
            out.write(line)
            written += len(line)
            rows += 1
    return rows


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _backend_cpu_seconds(pid: int) -> float:
    """A Postgres backend's user+system time (the server is on this machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child(mode: str, path: Path) -> dict[str, float]:
    """Run in a fresh process: parse or queue `path`, report rows, seconds, CPU, peak RSS."""
    from intake.csv_mapping import CsvOptions
    from intake.files import read_csv
    from penny.settings import Settings

    settings = Settings()
    options = CsvOptions()
    backend = 0.0
    if mode == "parse":
        started, cpu = time.perf_counter(), _cpu_seconds()
        rows = 0
        with path.open("rb") as stream:
            for _ in read_csv(stream, path.name, options, settings.max_prompt_chars):
                rows += 1
        seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    else:
        from datetime import timedelta

        from sqlalchemy import text

        from cache.keys import CachePolicy
        from intake.admission import IntakePolicy
        from intake.csv_upload import CsvSource, queue_csv
        from intake.limits import IntakeLimits
        from intake.max_tokens_caps import NO_CAPS
        from models.tenants import ensure_tenant
        from penny.runtime import open_runtime

        runtime = open_runtime(settings)
        with runtime.db.begin() as conn:
            conn.execute(text("TRUNCATE ledger_entries, results, jobs, batches, submissions "
                              "CASCADE"))
        # As the API looks rows up: the exact cache on, every served model cacheable.
        cache = CachePolicy(enabled=True, ttl=timedelta(days=1),
                            identities={m: "bench" for m in settings.models})
        with runtime.sessions() as session, path.open("rb") as stream:
            tenant = ensure_tenant(session, "bench")
            session.commit()
            # Read in the transaction queue_csv goes on with: the same connection.
            pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
            started, cpu = time.perf_counter(), _cpu_seconds()
            backend = _backend_cpu_seconds(pid)
            queued = queue_csv(session, CsvSource(stream, path.name, options,
                                                  settings.max_prompt_chars),
                               tenant=tenant, limits=IntakeLimits.from_settings(settings),
                               policy=IntakePolicy(), cache=cache,
                               caps=NO_CAPS)  # the bench tenant sets no max_tokens cap
            seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
            backend = _backend_cpu_seconds(pid) - backend
            rows = queued.rows
        with runtime.db.connect() as conn:
            durable = conn.execute(text("SELECT count(*) FROM jobs")).scalar_one()
        assert durable == rows, (durable, rows)
        runtime.close()
    return {"rows": rows, "seconds": seconds, "cpu": cpu, "backend_cpu": backend,
            "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    name = f"penny_csv_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.partition("?")[0].rpartition("/")[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[10, 40])
    parser.add_argument("--code", nargs="+", default=[f"this={REPO}"],
                        help="checkouts of penny to measure side by side, each LABEL=DIR")
    parser.add_argument("--admin-url", default=os.environ.get(
        "PENNY_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--modes", nargs="+", default=["parse", "queue"])
    parser.add_argument("--scratch", default=None,
                        help="directory for the generated files (default: the system's "
                             "temporary directory)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]))))
        return
    results = []
    loads = [_load()]
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        for size in args.sizes_mb:
            path = Path(scratch) / f"bench-{size}mb.csv"
            free = shutil.disk_usage(scratch).free
            if free < 2 * size * 1024 * 1024:
                raise SystemExit(f"{scratch} has {free / 2**30:.1f} GiB free: too little for "
                                 f"a {size} MB file")
            rows = write_csv(path, size)
            for labelled in args.code:
                label, _, code = labelled.rpartition("=")
                with fresh_database(args.admin_url) as database_url:
                    env = {**os.environ, "PENNY_DATABASE_URL": database_url,
                           "PYTHONPATH": str(Path(code).resolve()),
                           "PENNY_DATA_DIR": str(Path(scratch) / "data")}
                    measured = {}
                    for mode in args.modes:
                        out = subprocess.run([sys.executable, __file__, "--child", mode,
                                              str(path)], env=env, capture_output=True,
                                             text=True, check=False)
                        if out.returncode:
                            raise SystemExit(f"{labelled} {mode} failed:\n{out.stderr}")
                        measured[mode] = json.loads(out.stdout.strip().splitlines()[-1])
                        assert measured[mode]["rows"] == rows
                        loads.append(_load())
                results.append((label or code, path.stat().st_size, rows, measured))
            path.unlink()
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()}, "
          f"Python {platform.python_version()}; load average "
          f"(1, 5, 15 min) before and after each step: {' | '.join(loads)}")
    print()
    print("| code | file | rows | bytes/row | parse rows/s | parse CPU µs/row | "
          "into jobs rows/s | Python CPU µs/row | Postgres CPU µs/row | peak RSS |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for code, nbytes, rows, m in results:
        parse, queue = m.get("parse"), m.get("queue")
        cells = [code, f"{nbytes / 1e6:,.0f} MB", f"{rows:,}", f"{nbytes / rows:.0f}"]
        cells += ([f"{rows / parse['seconds']:,.0f}", f"{1e6 * parse['cpu'] / rows:.1f}"]
                  if parse else ["", ""])
        cells += ([f"{rows / queue['seconds']:,.0f}", f"{1e6 * queue['cpu'] / rows:.1f}",
                   f"{1e6 * queue['backend_cpu'] / rows:.1f}", f"{queue['rss_mib']:.0f} MiB"]
                  if queue else ["", "", "", ""])
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
