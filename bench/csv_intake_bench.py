"""CSV intake: rows per second parsed (read, mapped and validated, nothing stored) and
rows per second into durable jobs (the upload path, `queue_csv`: chunks of 2,000 rows in
one transaction, committed), with the peak memory of the process doing it, for files of
a few sizes. Memory flat in the file's size is the point; rows/s is what it costs.

    .venv/bin/python bench/csv_intake_bench.py [--sizes-mb 10 40] [--database-url URL]

Each size runs in a fresh child process, so its peak RSS (ru_maxrss) is its own. The
rows look like a real bulk job: an id, a prompt of ~120 characters with a comma and a
quoted line break in one row of five, a team tag. Uses PENNY_DATABASE_URL (or
--database-url); its tables are emptied first, so point it at a scratch database.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def child(mode: str, path: Path) -> dict[str, float]:
    """Run in a fresh process: parse or queue `path`, report rows, seconds, peak RSS."""
    from intake.csv_mapping import CsvOptions
    from intake.files import read_csv
    from penny.settings import Settings

    settings = Settings()
    options = CsvOptions()
    started = time.perf_counter()
    if mode == "parse":
        rows = 0
        with path.open("rb") as stream:
            for _ in read_csv(stream, path.name, options, settings.max_prompt_chars):
                rows += 1
    else:
        from sqlalchemy import text

        from intake.admission import IntakePolicy
        from intake.csv_upload import CsvSource, queue_csv
        from intake.limits import IntakeLimits
        from models.tenants import ensure_tenant
        from penny.runtime import open_runtime

        runtime = open_runtime(settings)
        with runtime.db.begin() as conn:
            conn.execute(text("TRUNCATE ledger_entries, results, jobs, batches, submissions "
                              "CASCADE"))
        started = time.perf_counter()
        with runtime.sessions() as session, path.open("rb") as stream:
            queued = queue_csv(session, CsvSource(stream, path.name, options,
                                                  settings.max_prompt_chars),
                               tenant=ensure_tenant(session, "bench"),
                               limits=IntakeLimits.from_settings(settings),
                               policy=IntakePolicy(), cache=None)
            rows = queued.rows
        seconds = time.perf_counter() - started
        with runtime.db.connect() as conn:
            durable = conn.execute(text("SELECT count(*) FROM jobs")).scalar_one()
        assert durable == rows, (durable, rows)
        runtime.close()
        return {"rows": rows, "seconds": seconds,
                "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    seconds = time.perf_counter() - started
    return {"rows": rows, "seconds": seconds,
            "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[10, 40])
    parser.add_argument("--database-url", default=os.environ.get("PENNY_DATABASE_URL"))
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]))))
        return
    if not args.database_url:
        raise SystemExit("set PENNY_DATABASE_URL or --database-url to a scratch database")
    env = {**os.environ, "PENNY_DATABASE_URL": args.database_url, "PYTHONPATH": str(REPO)}
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for size in args.sizes_mb:
            path = Path(scratch) / f"bench-{size}mb.csv"
            rows = write_csv(path, size)
            measured = {}
            for mode in ("parse", "queue"):
                out = subprocess.run([sys.executable, __file__, "--child", mode, str(path)],
                                     env=env, capture_output=True, text=True, check=True)
                measured[mode] = json.loads(out.stdout.strip().splitlines()[-1])
                assert measured[mode]["rows"] == rows
            results.append((size, path.stat().st_size, rows, measured))
            path.unlink()
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} "
          f"{platform.release()}, Python {platform.python_version()}")
    print()
    print("| file | rows | parse rows/s | parse peak RSS | into jobs rows/s | "
          "into jobs peak RSS |")
    print("|---|---|---|---|---|---|")
    for _size, nbytes, rows, m in results:
        parse, queue = m["parse"], m["queue"]
        print(f"| {nbytes / 1e6:.0f} MB | {rows:,} | {rows / parse['seconds']:,.0f} | "
              f"{parse['rss_mib']:.0f} MiB | {rows / queue['seconds']:,.0f} | "
              f"{queue['rss_mib']:.0f} MiB |")


if __name__ == "__main__":
    main()
