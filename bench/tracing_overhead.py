"""What tracing costs intake: `POST /v1/jobs` (one job) and `POST /v1/jobs/bulk` through
two `penny api` processes on one Postgres, one with tracing off (the default) and one
exporting every span (`PENNY_TRACES_EXPORTER=console`, written to /dev/null: the SDK's
span and batch-export work is paid, no network). The client sends each request to both in
turn (rotating which goes first), so load from elsewhere falls on both alike; the ratio
is the measurement.

    .venv/bin/python bench/tracing_overhead.py [--single 1000] [--bulk 20] [--bulk-jobs 1000]

Uses the embedded Postgres under PENNY_DATA_DIR (default var/bench) unless
PENNY_DATABASE_URL is set. Afterwards it counts, per server, the submissions that stored a
traceparent: all of the traced server's, none of the other's.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import func, select, text

REPO = Path(__file__).resolve().parent.parent
TABLES = "ledger_entries, results, jobs, batches, submissions, result_cache"
ARMS = {"off": "none", "on (every span exported)": "console"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_api(database_url: str, port: int, exporter: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PENNY_DATABASE_URL": database_url, "PENNY_API_PORT": str(port),
           "PENNY_API_WORKERS": "1", "PENNY_TRACES_EXPORTER": exporter,
           "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-c", "from penny.cli import main; main()", "api"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit(f"the API on port {port} did not start")


def job(n: int) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": f"What is {n} plus {n}?"}],
            "max_tokens": 16}


def interleaved(clients: dict[str, httpx.Client], path: str,
                bodies: list[dict[str, object]]) -> dict[str, list[float]]:
    spent: dict[str, list[float]] = {arm: [] for arm in clients}
    arms = list(clients)
    for n, body in enumerate(bodies):
        for arm in arms[n % 2:] + arms[:n % 2]:
            traceparent = f"00-{n + 1:032x}-{n + 1:016x}-01"
            started = time.perf_counter()
            response = clients[arm].post(path, json=body,
                                         headers={"traceparent": traceparent})
            spent[arm].append(time.perf_counter() - started)
            if response.status_code != 202:
                raise SystemExit(f"POST {path} answered {response.status_code}: "
                                 f"{response.text[:300]}")
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=1000, help="single-job POSTs per arm")
    parser.add_argument("--bulk", type=int, default=20, help="bulk POSTs per arm")
    parser.add_argument("--bulk-jobs", type=int, default=1000, help="jobs per bulk POST")
    args = parser.parse_args()
    os.environ.setdefault("PENNY_DATA_DIR", str(REPO / "var" / "bench"))
    os.environ.setdefault("PENNY_MODELS_DIR", str(REPO / "var" / "models"))

    from models.tables import Submission
    from penny.runtime import open_runtime
    from penny.settings import Settings

    runtime = open_runtime(Settings())
    with runtime.db.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} CASCADE"))
    ports = {arm: free_port() for arm in ARMS}
    servers = [start_api(runtime.database_url, ports[arm], exporter)
               for arm, exporter in ARMS.items()]
    clients = {arm: httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
               for arm, port in ports.items()}
    load_before = os.getloadavg()
    try:
        single = interleaved(clients, "/v1/jobs", [job(n) for n in range(args.single)])
        bulk = interleaved(clients, "/v1/jobs/bulk", [
            {"jobs": [job(b * args.bulk_jobs + i) for i in range(args.bulk_jobs)]}
            for b in range(args.bulk)])
    finally:
        for client in clients.values():
            client.close()
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
    load_after = os.getloadavg()
    with runtime.sessions() as session:
        traced = session.scalar(select(func.count()).select_from(Submission)
                                .where(Submission.traceparent.is_not(None)))
        submitted = session.scalar(select(func.count()).select_from(Submission))
    runtime.close()

    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(f"command: python bench/tracing_overhead.py --single {args.single} "
          f"--bulk {args.bulk} --bulk-jobs {args.bulk_jobs}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {memory_gib:.0f} GiB, "
          f"Python {platform.python_version()}; load average {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after")
    print()
    print("| request | tracing | requests | median ms | mean ms | x off (mean) |")
    print("|---|---|---:|---:|---:|---:|")
    for name, spent in (("POST /v1/jobs", single),
                        (f"POST /v1/jobs/bulk ({args.bulk_jobs} jobs)", bulk)):
        base = statistics.mean(spent["off"])
        for arm, times in spent.items():
            mean = statistics.mean(times)
            print(f"| {name} | {arm} | {len(times)} | {statistics.median(times) * 1000:.2f} "
                  f"| {mean * 1000:.2f} | {mean / base:.3f} |")
    print()
    print(f"submissions with a stored traceparent: {traced} of {submitted} "
          f"(the traced server's {args.single + args.bulk})")


if __name__ == "__main__":
    main()
