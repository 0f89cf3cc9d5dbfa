"""The chaos run at sizes beyond a test's: penny's real processes (API, coalescer, two
workers) on a private Postgres and Redis, jobs of several tenants in waves, while workers
and the coalescer are SIGKILLed, Redis is wiped and restarted and Postgres crashes and
restarts; then an audit of every job, result and ledger row.

    .venv/bin/python bench/chaos.py [--tenants 3] [--jobs-per-tenant 1000] [--waves 4]
                                    [--max-tokens 2] [--max-batch-jobs 128]

Prints the audit (lost, duplicate results, double-billed rows, cross-tenant rows, repeated
executions) with the faults and when they hit. Exits 1 when any invariant broke.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.chaos import ChaosPlan, ChaosRun  # noqa: E402 - after the path is set


def machine() -> str:
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.machine()}, {os.cpu_count()} cores, {memory_gib:.0f} GiB, "
            f"Python {platform.python_version()}, {platform.system()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=3)
    parser.add_argument("--jobs-per-tenant", type=int, default=1000)
    parser.add_argument("--waves", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=2)
    parser.add_argument("--max-batch-jobs", type=int, default=128)
    parser.add_argument("--finish-within", type=float, default=3600.0)
    args = parser.parse_args()
    plan = ChaosPlan(tenants=args.tenants, jobs_per_tenant=args.jobs_per_tenant,
                     waves=args.waves, max_tokens=args.max_tokens,
                     max_batch_jobs=args.max_batch_jobs,
                     finish_within_seconds=args.finish_within)
    run_dir = Path(tempfile.mkdtemp(prefix="penny-chaos-"))
    started = time.perf_counter()
    report = ChaosRun(plan, run_dir).run()
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {machine()}")
    print(f"logs: {run_dir}")
    print(report.table())
    print(f"total wall seconds (services and start-up included): "
          f"{time.perf_counter() - started:.0f}")
    broken = (report.lost or report.duplicate_results or report.double_billed
              or report.unbilled or report.cross_tenant
              or report.submitted != plan.tenants * plan.jobs_per_tenant)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
