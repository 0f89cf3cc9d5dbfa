"""Intake under load, as a new user would meet it: `penny api` on a fresh database beside a
no-persistence FastAPI endpoint with the same body validation (`bench/intake_reference.py`),
driven by the same load generator in the same run.

    .venv/bin/python bench/intake_load.py [--seconds 5] [--workers 2]

Scenarios: closed-loop single-job `POST /v1/jobs` at 8/32/64 clients and bulk
`POST /v1/jobs/bulk` at 100/1,000/5,000 jobs per request (`wrk`, bodies built by a Lua
script, every prompt distinct), and an open-loop run at a fixed offered rate (a lean
asyncio client here, latency counted from when each request was due, so a slow server
cannot hide its queue). After each penny run the bench waits for the server to go quiet,
then checks in Postgres that every submission answered 202 holds exactly the jobs it was
answered with: "durable jobs/s" counts only those. "late" are jobs the server committed
for requests the client had stopped waiting for when the run ended (in flight at the cut).

Server CPU is the user+system time of the server's process tree (its uvicorn workers
included) over the run, per accepted job; Postgres' own CPU is not in it. The load
generator runs on the same cores: read the ratio to the reference as the measurement.

Needs `wrk` (Debian package `wrk`) and a Postgres to create the database in
(`--admin-url`, default the local server as `postgres`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

REPO = Path(__file__).resolve().parent.parent
SINGLE_PATH, BULK_PATH = "/v1/jobs", "/v1/jobs/bulk"

# Each item's prompt is made distinct by a tag the script fills in: nothing is a cache hit
# or a single-flight copy of another, so every job is a new row.
ITEM_HEAD = '{"messages":[{"role":"user","content":"load test '
ITEM_TAIL = ': what is the capital of France?"}],"max_tokens":16}'

LUA = r"""
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end
function init(args)
  counter = 0
  ok, bad = 0, 0
  ids = io.open(IDS_DIR .. "/ids-" .. tid, "w")
  ids:setvbuf("line")
end
local headers = {["Content-Type"] = "application/json"}
request = function()
  counter = counter + 1
  local tag = tid .. "-" .. counter
  if PER_REQUEST == 0 then
    return wrk.format("POST", PATH, headers, ITEM_HEAD .. tag .. ITEM_TAIL)
  end
  local items = {}
  for i = 1, PER_REQUEST do
    items[i] = ITEM_HEAD .. tag .. "-" .. i .. ITEM_TAIL
  end
  return wrk.format("POST", PATH, headers, '{"jobs":[' .. table.concat(items, ",") .. "]}")
end
response = function(status, headers, body)
  if status == 202 then
    ok = ok + 1
    local id = string.match(body, '"submission_id":"([0-9a-f-]+)"')
    if id then ids:write(id, "\n") end
  else
    bad = bad + 1
  end
end
function done(summary, latency, requests)
  local ok_total, bad_total = 0, 0
  for _, t in ipairs(threads) do
    ok_total = ok_total + t:get("ok")
    bad_total = bad_total + t:get("bad")
  end
  local e = summary.errors
  io.write(string.format(
    'RESULT {"ok":%d,"bad":%d,"socket_errors":%d,"timeouts":%d,"seconds":%f,' ..
    '"p50":%d,"p95":%d,"p99":%d}\n',
    ok_total, bad_total, e.connect + e.read + e.write, e.timeout,
    summary.duration / 1e6, latency:percentile(50), latency:percentile(95),
    latency:percentile(99)))
end
"""


@dataclass
class Run:
    target: str
    scenario: str
    per_request: int
    accepted_requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    cpu_seconds: float = 0.0
    durable_jobs: int | None = None  # None: not checked (the reference keeps nothing)
    lost: int = 0
    late: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def accepted_jobs(self) -> int:
        return self.accepted_requests * max(self.per_request, 1)

    @property
    def jobs_per_second(self) -> float:
        jobs = self.accepted_jobs if self.durable_jobs is None else self.durable_jobs
        return jobs / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_job(self) -> float:
        return 1000 * self.cpu_seconds / self.accepted_jobs if self.accepted_jobs else 0.0


def tree_cpu(pid: int) -> float:
    """User + system seconds of a process and every descendant alive now (Linux /proc)."""
    total, pending = 0.0, [pid]
    tick = os.sysconf("SC_CLK_TCK")
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rpartition(")")[2].split()
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def wait_for(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url} exited at start:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise SystemExit(f"{url} did not answer in 120 s")


@contextmanager
def server(command: list[str], env: dict[str, str], health: str, log: Path
           ) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        # In the checkout served: `python -c` and `-m` import from the working directory
        # before PYTHONPATH.
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   cwd=env["PYTHONPATH"])
        try:
            wait_for(health, process, log)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    name = f"penny_intake_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_url.partition("?")[0].rpartition("/")
    query = "?" + admin_url.split("?", 1)[1] if "?" in admin_url else ""
    try:
        yield f"{base}/{name}{query}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def job_count(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM jobs").fetchone()
    return int(row[0]) if row else 0


def settle(database_url: str) -> int:
    """The jobs count once it stops moving: requests in flight at the cut finish first."""
    last, still_since = -1, time.monotonic()
    while True:
        now = job_count(database_url)
        if now != last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since > 1.0:
            return now
        time.sleep(0.2)


def check_durable(database_url: str, submission_ids: list[str], per_request: int
                  ) -> tuple[int, int]:
    """(jobs found for the 202-answered submissions, how many of those submissions do not
    hold exactly the jobs they were answered with)."""
    if not submission_ids:
        return 0, 0
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT s.id, count(j.id) FROM unnest(%s::uuid[]) AS s(id) "
            "LEFT JOIN jobs j ON j.submission_id = s.id GROUP BY s.id",
            [submission_ids]).fetchall()
    counts = {str(row[0]): int(row[1]) for row in rows}
    wrong = sum(1 for sid in submission_ids if counts.get(sid) != max(per_request, 1))
    wrong += len(submission_ids) - len(set(submission_ids))  # an id answered twice
    return sum(counts.values()), wrong


def run_wrk(url: str, path: str, clients: int, seconds: float, per_request: int,
            workdir: Path) -> tuple[dict[str, float], list[str]]:
    ids_dir = workdir / f"ids-{uuid.uuid4().hex[:6]}"
    ids_dir.mkdir()
    script = workdir / "load.lua"
    head = json.dumps(ITEM_HEAD)
    tail = json.dumps(ITEM_TAIL)
    script.write_text(f"PATH = {json.dumps(path)}\nPER_REQUEST = {per_request}\n"
                      f"ITEM_HEAD = {head}\nITEM_TAIL = {tail}\n"
                      f"IDS_DIR = {json.dumps(str(ids_dir))}\n" + LUA)
    threads = min(2, clients)
    done = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(clients), "-d", f"{max(1, round(seconds))}s",
         "--timeout", "30s", "-s", str(script), url],
        capture_output=True, text=True, check=True)
    found = re.search(r"^RESULT (.*)$", done.stdout, re.MULTILINE)
    if found is None:
        raise SystemExit(f"wrk printed no result:\n{done.stdout}\n{done.stderr}")
    ids = [line for file in ids_dir.iterdir() for line in file.read_text().split()]
    return json.loads(found.group(1)), ids


async def open_loop(host: str, port: int, rate: float, seconds: float, connections: int = 64
                    ) -> tuple[list[float], int, int, list[str], float]:
    """Offer `rate` single-job POSTs a second for `seconds` over at most `connections`
    keep-alive connections; a request due while all are busy waits for one, and that wait
    counts in its latency (measured from when it was due). Returns (latencies, 202s,
    other answers or failures, submission ids answered 202, elapsed seconds)."""
    free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = (
        asyncio.Queue())
    for _ in range(connections):
        free.put_nowait(None)  # a slot whose connection is opened at its first use
    latencies: list[float] = []
    ids: list[str] = []
    failed = 0
    pattern = re.compile(rb'"submission_id":"([0-9a-f-]+)"')
    length_of = re.compile(rb"(?i)content-length: *(\d+)")

    async def one(n: int, due: float) -> None:
        nonlocal failed
        body = (ITEM_HEAD + f"open-{n}" + ITEM_TAIL).encode()
        head = (f"POST {SINGLE_PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: "
                f"application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        slot = await free.get()
        try:
            reader, writer = slot or await asyncio.open_connection(host, port)
            writer.write(head + body)
            status_line = await reader.readuntil(b"\r\n")
            headers = await reader.readuntil(b"\r\n\r\n")
            length = length_of.search(headers)
            answer = await reader.readexactly(int(length.group(1)) if length else 0)
        except (OSError, asyncio.IncompleteReadError):
            failed += 1
            free.put_nowait(None)
            return
        latencies.append(time.perf_counter() - due)
        free.put_nowait((reader, writer))
        if b" 202 " in status_line:
            found = pattern.search(answer)
            if found:
                ids.append(found.group(1).decode())
        else:
            failed += 1

    tasks = []
    start = time.perf_counter()
    for n in range(int(rate * seconds)):
        due = start + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n, due)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    while not free.empty():
        slot = free.get_nowait()
        if slot is not None:
            slot[1].close()
    return latencies, len(ids), failed, ids, elapsed


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def machine() -> str:
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{platform.machine()}, {os.cpu_count()} cores, {memory_gib:.0f} GiB, "
            f"Python {platform.python_version()}, load average {load} at the end")


def print_table(runs: list[Run], command: str) -> None:
    print(f"\ncommand: {command}\nmachine: {machine()}\n")
    reference = {r.scenario: r for r in runs if r.target == "reference"}
    header = ("| scenario | target | durable jobs/s | x reference | p50 ms | p95 ms | p99 ms "
              "| errors | lost | late | server CPU ms/job |")
    print(header)
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        ref = reference.get(run.scenario)
        ratio = (f"{run.jobs_per_second / ref.jobs_per_second:.2f}"
                 if ref and run.target != "reference" and ref.jobs_per_second else "")
        print(f"| {run.scenario} | {run.target} | {run.jobs_per_second:,.0f} | "
              f"{ratio} | {run.p50_ms:.1f} | {run.p95_ms:.1f} | {run.p99_ms:.1f} | "
              f"{run.errors} | {'' if run.durable_jobs is None else run.lost} | "
              f"{'' if run.durable_jobs is None else run.late} | {run.cpu_ms_per_job:.2f} |")
    for run in runs:
        for note in run.notes:
            print(f"- {run.scenario}, {run.target}: {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-url", default=os.environ.get(
        "PENNY_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--seconds", type=float, default=5.0, help="per closed-loop run")
    parser.add_argument("--clients", default="8,32,64")
    parser.add_argument("--bulk", default="100,1000,5000", help="jobs per bulk request")
    parser.add_argument("--bulk-clients", type=int, default=4)
    parser.add_argument("--bulk-seconds", type=float, default=10.0,
                        help="per bulk run: a 5,000-job request takes seconds")
    parser.add_argument("--rate", type=float, default=1000.0, help="open-loop POSTs/s")
    parser.add_argument("--open-seconds", type=float, default=5.0)
    parser.add_argument("--code", type=Path, default=REPO,
                        help="the checkout of penny to serve (for a before/after run)")
    parser.add_argument("--workers", type=int, default=None,
                        help="uvicorn worker processes of each server (default: one per "
                             "core, penny's own default)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")

    workdir = Path(tempfile.mkdtemp(prefix="intake-bench-"))
    runs: list[Run] = []
    penny_port, reference_port = 18_431, 18_432
    with fresh_database(args.admin_url) as database_url:
        env = {**os.environ, "PYTHONPATH": str(args.code.resolve()),
               "PENNY_DATABASE_URL": database_url,
               "PENNY_DATA_DIR": str(workdir / "data"),
               "PENNY_MODELS_DIR": os.environ.get("PENNY_MODELS_DIR",
                                                  str(REPO / "var" / "models")),
               "PENNY_API_PORT": str(penny_port)}
        workers = args.workers or os.cpu_count() or 1
        penny_cmd = [sys.executable, "-c", "from penny.cli import main; main()", "api",
                     "--workers", str(workers)]
        reference_cmd = [sys.executable, "-m", "uvicorn", "--factory",
                         "bench.intake_reference:create_app", "--port", str(reference_port),
                         "--log-level", "warning", "--workers", str(workers)]
        with server(penny_cmd, env, f"http://127.0.0.1:{penny_port}/healthz",
                    workdir / "penny.log") as penny, \
                server(reference_cmd, env, f"http://127.0.0.1:{reference_port}/docs",
                       workdir / "reference.log") as reference:
            targets = {"reference": (reference, reference_port), "penny": (penny, penny_port)}
            # An empty list ("--clients ''") leaves those scenarios out.
            scenarios = [(f"single, {c} clients", SINGLE_PATH, c, 0, args.seconds)
                         for c in map(int, filter(None, args.clients.split(",")))]
            scenarios += [(f"bulk {n:,}/request, {args.bulk_clients} clients", BULK_PATH,
                           args.bulk_clients, n, args.bulk_seconds)
                          for n in map(int, filter(None, args.bulk.split(",")))]
            for scenario, path, clients, per_request, seconds in scenarios:
                for target, (process, port) in targets.items():
                    run = Run(target, scenario, per_request)
                    before_rows = job_count(database_url) if target == "penny" else 0
                    cpu = tree_cpu(process.pid)
                    result, ids = run_wrk(f"http://127.0.0.1:{port}", path, clients,
                                          seconds, per_request, workdir)
                    run.cpu_seconds = tree_cpu(process.pid) - cpu
                    run.accepted_requests = int(result["ok"])
                    run.errors = int(result["bad"] + result["socket_errors"]
                                     + result["timeouts"])
                    run.seconds = result["seconds"]
                    run.p50_ms, run.p95_ms, run.p99_ms = (
                        result[p] / 1000 for p in ("p50", "p95", "p99"))
                    if target == "penny":
                        verify(run, database_url, ids, before_rows)
                    runs.append(run)
                    print(f"{scenario:40} {target:10} {run.jobs_per_second:9,.0f} jobs/s",
                          file=sys.stderr)
            scenario = f"open loop, {args.rate:,.0f} POSTs/s offered"
            for target, (process, port) in (targets.items() if args.open_seconds else ()):
                run = Run(target, scenario, 0)
                before_rows = job_count(database_url) if target == "penny" else 0
                cpu = tree_cpu(process.pid)
                latencies, ok, failed, ids, elapsed = asyncio.run(
                    open_loop("127.0.0.1", port, args.rate, args.open_seconds))
                run.cpu_seconds = tree_cpu(process.pid) - cpu
                run.accepted_requests, run.errors, run.seconds = ok, failed, elapsed
                run.p50_ms, run.p95_ms, run.p99_ms = (
                    1000 * percentile(latencies, q) for q in (0.5, 0.95, 0.99))
                if target == "penny":
                    verify(run, database_url, ids, before_rows)
                runs.append(run)
                print(f"{scenario:40} {target:10} {run.jobs_per_second:9,.0f} jobs/s",
                      file=sys.stderr)
    shutil.rmtree(workdir, ignore_errors=True)
    print_table(runs, "python bench/intake_load.py " + " ".join(sys.argv[1:]))


def verify(run: Run, database_url: str, ids: list[str], before_rows: int) -> None:
    """Durable = jobs of 202-answered submissions found in Postgres with exactly their
    count; lost = answered 202 but missing or wrong; late = committed without a 202 the
    client saw (in flight at the cut)."""
    after_rows = settle(database_url)
    found, wrong = check_durable(database_url, ids, run.per_request)
    if len(ids) != run.accepted_requests:
        run.notes.append(f"{run.accepted_requests - len(ids)} 202s carried no submission id")
    run.durable_jobs = found if not wrong else found - wrong * max(run.per_request, 1)
    run.lost = run.accepted_jobs - found + wrong * max(run.per_request, 1)
    run.late = after_rows - before_rows - found


if __name__ == "__main__":
    main()
