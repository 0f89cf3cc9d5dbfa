"""What the exact result cache's lookup costs single-job intake: `POST /v1/jobs` through
the real API (a `penny api` process) with the cache on and with it off, same database,
same client, alternating rounds in one run. Every job here is new, so each lookup misses
and the "on" server pays the lookup query and gets nothing for it: the worst case. A third
row posts jobs whose answers are already cached (each is answered in the request).

    .venv/bin/python bench/intake_cache_bench.py [--requests 300] [--rounds 5]
                                                   [--concurrency 4]

Uses the embedded Postgres under PENNY_DATA_DIR (default var/bench) unless
PENNY_DATABASE_URL is set, and the offline model prepared under var/models (its identity
is part of the cache key). The client is Python (httpx, one thread per connection) on the
same cores as the server, so absolute numbers are the client's as much as the server's;
the ratio between the rows is the measurement.
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


def post_all(url: str, bodies: list[dict[str, object]], concurrency: int) -> float:
    """Post every body (one connection per thread); return the wall seconds."""
    chunks = [bodies[i::concurrency] for i in range(concurrency)]

    def worker(chunk: list[dict[str, object]]) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            for body in chunk:
                response = client.post("/v1/jobs", json=body)
                if response.status_code != 202:
                    raise SystemExit(f"POST /v1/jobs answered {response.status_code}: "
                                     f"{response.text}")

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, chunks))
    return time.perf_counter() - started


def prefill(settings: object, sessions: object, bodies: list[dict[str, object]]) -> None:
    """Cache an answer for each body under the key the API will look up (the fill path a
    worker takes when a batch records)."""
    from cache.model_identity import cache_policy
    from intake.schema import JobRequest
    from models.queue import ClaimedJob, JobOutcome
    from models.result_cache import fill_result_cache
    from models.submissions import tenant_id_for
    from penny.settings import Settings

    assert isinstance(settings, Settings)
    policy = cache_policy(settings)
    with sessions() as session:  # type: ignore[operator]
        tenant_id = tenant_id_for(session, "default")
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


def machine() -> str:
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.machine()}, {os.cpu_count()} cores, {memory_gib:.0f} GiB, "
            f"Python {platform.python_version()}, {platform.system()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="POSTs per round and mode")
    parser.add_argument("--rounds", type=int, default=5)
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
    ports = {"off": free_port(), "on": free_port()}
    servers = {mode: start_api(runtime.database_url, port, cache=mode == "on")
               for mode, port in ports.items()}
    seconds: dict[str, list[float]] = {"off": [], "on": [], "on, every job a hit": []}
    try:
        for mode in ("off", "on"):  # warm-up, not measured
            post_all(f"http://127.0.0.1:{ports[mode]}",
                     [job_body(f"warm-{mode}", n) for n in range(50)], args.concurrency)
        for round_no in range(args.rounds):
            # Alternate which mode goes first: the machine's load drifts.
            order = ("off", "on") if round_no % 2 == 0 else ("on", "off")
            for mode in order:
                bodies = [job_body(f"{mode}-{round_no}", n) for n in range(args.requests)]
                seconds[mode].append(post_all(f"http://127.0.0.1:{ports[mode]}", bodies,
                                              args.concurrency))
            hits = [job_body(f"hit-{round_no}", n) for n in range(args.requests)]
            prefill(settings, runtime.sessions, hits)
            seconds["on, every job a hit"].append(
                post_all(f"http://127.0.0.1:{ports['on']}", hits, args.concurrency))
    finally:
        for process in servers.values():
            process.terminate()
            process.wait()
    with runtime.sessions() as session:
        states = {status: int(n) for status, n in session.execute(
            select(Job.status, func.count()).group_by(Job.status))}
    expected_queued = 2 * args.rounds * args.requests + 100
    expected_hits = args.rounds * args.requests
    with runtime.db.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} CASCADE"))
    runtime.close()

    print(f"command: python bench/intake_cache_bench.py --requests {args.requests} "
          f"--rounds {args.rounds} --concurrency {args.concurrency}")
    print(f"machine: {machine()}")
    print(f"workload: single-job POST /v1/jobs, {args.requests} per round x {args.rounds} "
          f"rounds per row, {args.concurrency} keep-alive connections, one `penny api` "
          "process per mode on the same Postgres\n")
    print("| exact cache | jobs/s (median round) | ms per job | x cache off |")
    print("|---|---:|---:|---:|")
    baseline = statistics.median(args.requests / s for s in seconds["off"])
    for mode, rounds in seconds.items():
        rate = statistics.median(args.requests / s for s in rounds)
        print(f"| {mode} | {rate:.0f} | {1000 / rate:.2f} | {rate / baseline:.3f} |")
    print(f"\njobs in Postgres afterwards: {states} "
          f"(expected queued {expected_queued}, succeeded {expected_hits})")
    if states.get("queued") != expected_queued or states.get("succeeded") != expected_hits:
        raise SystemExit("a POST that answered 202 left no row, or a hit was not a hit")


if __name__ == "__main__":
    main()
