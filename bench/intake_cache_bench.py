"""What the exact result cache's lookup costs single-job intake: `POST /v1/jobs` through
the real API (`penny api` processes) with the cache off and on, same database, same
client, in one run, request by request in turn. Every job of the "on" row is new, so each
lookup misses and pays for nothing: the worst case. The third row posts jobs whose
answers are already cached (each is answered in the request). A second table times the
group writer's statements alone.

    .venv/bin/python bench/intake_cache_bench.py [--requests 2000] [--concurrency 4]

Uses the embedded Postgres under PENNY_DATA_DIR (default var/bench) unless
PENNY_DATABASE_URL is set, and the offline model prepared under var/models (its identity
is part of the cache key). The client is Python (httpx, one thread per connection) on the
same cores as the server, so absolute numbers are the client's as much as the server's;
the ratio between the rows is the measurement ("x cache off": the mean latency with the
cache off over this row's, which is the throughput ratio of a client waiting for each
answer).
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
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx
from sqlalchemy import func, select, text

REPO = Path(__file__).resolve().parent.parent
TABLES = "ledger_entries, results, jobs, batches, submissions, result_cache"


def job_body(label: str, n: int) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": f"{label}: what is {n} plus {n}?"}],
            "max_tokens": 16}


def start_api(database_url: str, port: int, cache: bool) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PENNY_DATABASE_URL": database_url, "PENNY_API_PORT": str(port),
           "PENNY_RESULT_CACHE": "true" if cache else "false",
           "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-c", "from penny.cli import main; main()", "api"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit(f"the API on port {port} did not start")


MODES = ("off", "on", "on, every job a hit")


def post_interleaved(urls: dict[str, str], bodies: dict[str, list[dict[str, object]]],
                     concurrency: int) -> dict[str, list[float]]:
    """Post every body, each thread taking the modes in turn request by request (rotating
    which goes first), so load from elsewhere on the machine falls on all modes alike.
    Returns each mode's request latencies in seconds."""
    latencies: dict[str, list[float]] = {mode: [] for mode in bodies}

    def worker(part: int) -> None:
        clients = {mode: httpx.Client(base_url=urls[mode], timeout=30) for mode in bodies}
        try:
            count = len(next(iter(bodies.values())))
            for n in range(part, count, concurrency):
                modes = list(bodies)
                shift = n % len(modes)
                for mode in modes[shift:] + modes[:shift]:
                    started = time.perf_counter()
                    response = clients[mode].post("/v1/jobs", json=bodies[mode][n])
                    latencies[mode].append(time.perf_counter() - started)
                    if response.status_code != 202:
                        raise SystemExit(f"POST /v1/jobs answered {response.status_code}: "
                                         f"{response.text}")
        finally:
            for client in clients.values():
                client.close()

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    return latencies


def prefill(settings: object, sessions: object, bodies: list[dict[str, object]]) -> None:
    """Cache an answer for each body under the key the API will look up (the fill path a
    worker takes when a batch records)."""
    from cache.model_identity import cache_policy
    from intake.schema import JobRequest
    from models.queue import ClaimedJob, JobOutcome
    from models.result_cache import fill_result_cache
    from models.tenants import ensure_tenant
    from penny.settings import Settings

    assert isinstance(settings, Settings)
    policy = cache_policy(settings)
    with sessions() as session:  # type: ignore[operator]
        tenant_id = ensure_tenant(session, "default").id
        outcomes = [
            JobOutcome(
                ClaimedJob(uuid.uuid4(), tenant_id, uuid.uuid4(),
                           JobRequest.model_validate(body).engine_request()),
                {"text": "4", "finish_reason": "stop", "prompt_tokens": 20,
                 "cached_tokens": 0, "output_tokens": 2, "mean_logprob": -0.1},
                {"cost_usd": Decimal("0.00001"), "list_cost_usd": Decimal("0.00002")}, None)
            for body in bodies
        ]
        fill_result_cache(session, policy, settings.default_model, outcomes)
        session.commit()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def query_costs(sessions: object, database_url: str, count: int) -> dict[str, float]:
    """Seconds per call of the group writer's statements for a group of one job,
    interleaved call by call on the writer's kind of connection, inside one transaction
    (rolled back): the insert alone (cache off) and the insert that looks the job's key up
    in the same statement (cache on: a miss, inserted; a hit, its answer read and nothing
    inserted, which a second step then writes); a trivial query beside them is the floor
    of a round trip."""
    import asyncio

    from cache.model_identity import cache_policy
    from intake.limits import IntakeLimits
    from intake.schema import JobRequest
    from intake.service import jobs_for_requests
    from models.single_jobs import (
        SingleJobSubmission,
        single_job_submission,
        write_single_jobs,
    )
    from models.tenants import ensure_tenant
    from penny.database import connect_async
    from penny.settings import Settings

    settings = Settings()
    policy = cache_policy(settings)
    limits = IntakeLimits.from_settings(settings)

    with sessions() as session:  # type: ignore[operator]
        tenant_id = ensure_tenant(session, "default").id
        session.commit()
    numbered = iter(range(10**9))

    def group(label: str, number: int | None, looked_up: bool) -> list[SingleJobSubmission]:
        body = JobRequest.model_validate(
            job_body(label, next(numbered) if number is None else number))
        job = jobs_for_requests([body], limits)[0]
        return [single_job_submission(tenant_id, job, "h", policy if looked_up else None)]

    # Each call's group is built before its clock starts: only the statement is timed.
    groups: dict[str, Callable[[], list[SingleJobSubmission]]] = {
        "a round trip (SELECT 1)": list,
        "insert, cache off": lambda: group("query-cost", None, looked_up=False),
        "insert with the lookup, a miss": lambda: group("query-cost", None, looked_up=True),
        # The first body of the third row was cached by `prefill`: found, nothing inserted.
        "insert with the lookup, a hit (its answer read)": lambda: group(MODES[2], 0,
                                                                         looked_up=True),
    }
    spent = dict.fromkeys(groups, 0.0)

    async def measure() -> None:
        connection = await connect_async(database_url)
        try:
            async with connection.transaction(force_rollback=True):
                for _ in range(count):
                    for name, make in groups.items():
                        one = make()
                        started = time.perf_counter()
                        if one:
                            await write_single_jobs(connection, one)
                        else:
                            await connection.execute("SELECT 1")
                        spent[name] += time.perf_counter() - started
        finally:
            await connection.close()

    asyncio.run(measure())
    return {name: total / count for name, total in spent.items()}


def machine() -> str:
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.machine()}, {os.cpu_count()} cores, {memory_gib:.0f} GiB, "
            f"Python {platform.python_version()}, {platform.system()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="POSTs per row")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    os.environ.setdefault("PENNY_DATA_DIR", str(REPO / "var" / "bench"))
    os.environ.setdefault("PENNY_MODELS_DIR", str(REPO / "var" / "models"))

    from cache.model_identity import model_identity
    from models.tables import Job
    from penny.runtime import open_runtime
    from penny.settings import Settings

    settings = Settings()
    if model_identity(settings, settings.default_model) is None:
        raise SystemExit("the offline model is not prepared (make install): without its "
                         "identity the cache is never looked up and there is nothing to "
                         "measure")
    runtime = open_runtime(settings)
    with runtime.db.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} CASCADE"))
    # One server per row, so each process gets the same share of requests (a busier
    # process is scheduled differently on a loaded machine).
    ports = {mode: free_port() for mode in MODES}
    servers = {mode: start_api(runtime.database_url, port, cache=mode != "off")
               for mode, port in ports.items()}
    urls = {mode: f"http://127.0.0.1:{port}" for mode, port in ports.items()}
    try:
        post_interleaved(urls, {m: [job_body(f"warm-{m}", n) for n in range(50)]
                                for m in MODES}, args.concurrency)  # warm-up, not measured
        bodies = {mode: [job_body(f"{mode}", n) for n in range(args.requests)]
                  for mode in MODES}
        prefill(settings, runtime.sessions, bodies[MODES[2]])
        latencies = post_interleaved(urls, bodies, args.concurrency)
        queries = query_costs(runtime.sessions, runtime.database_url, args.requests)
    finally:
        for process in servers.values():
            process.terminate()
            process.wait()
    with runtime.sessions() as session:
        states = {status: int(n) for status, n in session.execute(
            select(Job.status, func.count()).group_by(Job.status))}
    expected_queued = 2 * args.requests + 150
    expected_hits = args.requests
    with runtime.db.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} CASCADE"))
    runtime.close()

    print(f"command: python bench/intake_cache_bench.py --requests {args.requests} "
          f"--concurrency {args.concurrency}")
    print(f"machine: {machine()}")
    print(f"workload: single-job POST /v1/jobs, {args.requests} per row, {args.concurrency} "
          "keep-alive connections each taking the rows in turn request by request, one "
          "`penny api` process per row (cache off / on / on), same Postgres\n")
    print("| exact cache | median ms per POST | mean ms | p90 ms | jobs/s per connection "
          "| x cache off |")
    print("|---|---:|---:|---:|---:|---:|")
    base = statistics.fmean(latencies["off"])
    for mode in MODES:
        values = sorted(latencies[mode])
        mean = statistics.fmean(values)
        print(f"| {mode} | {1000 * statistics.median(values):.2f} | {1000 * mean:.2f} | "
              f"{1000 * values[int(0.9 * (len(values) - 1))]:.2f} | {1 / mean:.1f} | "
              f"{base / mean:.3f} |")
    print("\nthe query itself, in one process and session, interleaved call by call:\n")
    print("| the group writer's statement, a group of one | µs per call |")
    print("|---|---:|")
    for name, per_call in queries.items():
        print(f"| {name} | {1e6 * per_call:.0f} |")
    print(f"\njobs in Postgres afterwards: {states} "
          f"(expected queued {expected_queued}, succeeded {expected_hits})")
    if states.get("queued") != expected_queued or states.get("succeeded") != expected_hits:
        raise SystemExit("a POST that answered 202 left no row, or a hit was not a hit")


if __name__ == "__main__":
    main()
