"""The chaos harness: penny in distributed mode (API, coalescer and two workers, each a real
process) on a private Postgres and a private Redis, fed jobs of several tenants in waves
while the harness SIGKILLs workers and the coalescer, wipes and restarts Redis, and crashes
and restarts Postgres. Then it waits for every job to end and audits the database.

Used by `tests/e2e/test_chaos.py` (a size that fits a test run) and `bench/chaos.py`
(larger sizes). Clients retry like real ones: on a refused connection or a 5xx they send
the same request again with the same Idempotency-Key, so a submission is made at most once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import psycopg

from tests.services import PrivatePostgres, PrivateRedis
from tests.support import MODELS_DIR, free_port

PENNY = Path(sys.executable).with_name("penny")
TERMINAL = ("succeeded", "failed", "cancelled", "expired")


@dataclass(frozen=True)
class ChaosPlan:
    tenants: int = 3
    jobs_per_tenant: int = 334
    waves: int = 4
    max_tokens: int = 2
    max_batch_jobs: int = 128
    lease_seconds: float = 10.0
    workers: int = 2
    finish_within_seconds: float = 900.0


@dataclass
class ChaosReport:
    plan: ChaosPlan
    jobs: int = 0
    submitted: int = 0  # job ids the API handed back
    by_status: dict[str, int] = field(default_factory=dict)
    lost: int = 0  # submitted but not in the database, or not ended
    duplicate_results: int = 0  # result rows beyond one per job
    double_billed: int = 0  # ledger rows beyond one per job
    unbilled: int = 0  # succeeded jobs without a ledger row
    cross_tenant: int = 0  # ledger/result rows or API reads that cross tenants
    duplicate_executions: int = 0  # claims of a job beyond its first
    batches_by_status: dict[str, int] = field(default_factory=dict)
    faults: list[tuple[float, str]] = field(default_factory=list)
    seconds: float = 0.0
    client_retries: int = 0

    def table(self) -> str:
        rows = [
            ("jobs submitted / in database", f"{self.submitted} / {self.jobs}"),
            ("by status", json.dumps(self.by_status, sort_keys=True)),
            ("lost", self.lost),
            ("duplicate results", self.duplicate_results),
            ("double-billed ledger rows", self.double_billed),
            ("succeeded without a ledger row", self.unbilled),
            ("cross-tenant rows or reads", self.cross_tenant),
            ("duplicate executions (claims beyond the first)", self.duplicate_executions),
            ("batches by status", json.dumps(self.batches_by_status, sort_keys=True)),
            ("client retries (same Idempotency-Key)", self.client_retries),
            ("wall seconds", f"{self.seconds:.0f}"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        lines.append("faults:")
        lines.extend(f"  t={at:6.1f}s  {what}" for at, what in self.faults)
        return "\n".join(lines)


class _Fleet:
    """penny's processes, each with its log file, started, killed and restarted by role."""

    def __init__(self, run_dir: Path, env: dict[str, str]) -> None:
        self.run_dir, self.env = run_dir, env
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    def start(self, name: str, *args: str) -> None:
        log = (self.run_dir / f"{name}.log").open("ab")
        self._logs.append(log)
        self.processes[name] = subprocess.Popen([str(PENNY), *args], env=self.env,
                                                stdout=log, stderr=subprocess.STDOUT)

    def kill(self, name: str) -> None:
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait()

    def worker_ids(self) -> dict[str, str]:
        """Each running worker role's id, as its latest start logged it (at INFO: workers
        run with --verbose)."""
        ids: dict[str, str] = {}
        for name in self.processes:
            if name.startswith("worker"):
                started = re.findall(r"worker (\S+) consuming",
                                     (self.run_dir / f"{name}.log").read_text(errors="replace"))
                if started:
                    ids[name] = started[-1]
        return ids

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                log = (self.run_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{log}")

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self._logs:
            log.close()


class _Client:
    """One tenant's HTTP client that retries the same request (same Idempotency-Key) until
    the API answers it: what a careful user's client does across an outage."""

    def __init__(self, url: str, key: str, report: ChaosReport) -> None:
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                                 timeout=60)
        self.report = report

    def send(self, method: str, path: str, *, deadline: float = 300,
             **kwargs: Any) -> httpx.Response:
        give_up = time.monotonic() + deadline
        while True:
            try:
                response = self.http.request(method, path, **kwargs)
                if response.status_code < 500:
                    return response
            except httpx.TransportError:
                pass
            if time.monotonic() > give_up:
                raise RuntimeError(f"{method} {path} got no answer in {deadline}s")
            self.report.client_retries += 1
            time.sleep(0.5)

    def close(self) -> None:
        self.http.close()


def _wait(predicate: Callable[[], bool], timeout: float, what: str,
          interval: float = 0.2, check: Callable[[], None] | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check is not None:
            check()
        try:
            if predicate():
                return True
        except psycopg.Error:
            pass  # the database may be the thing that is down
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class ChaosRun:
    def __init__(self, plan: ChaosPlan, run_dir: Path) -> None:
        self.plan, self.run_dir = plan, run_dir
        self.report = ChaosReport(plan)
        self.keys = {f"tenant-{t}": f"sk-chaos-{t}-{uuid.uuid4().hex}"
                     for t in range(plan.tenants)}
        self.job_ids: dict[str, list[str]] = {tenant: [] for tenant in self.keys}
        self._started = 0.0

    def _fault(self, what: str) -> None:
        self.report.faults.append((time.monotonic() - self._started, what))

    @contextmanager
    def _services(self) -> Iterator[tuple[PrivatePostgres, PrivateRedis, str]]:
        with PrivatePostgres() as postgres, PrivateRedis() as redis_server:
            database = postgres.create_database("penny_chaos")
            yield postgres, redis_server, database

    def _env(self, database: str, redis_url: str, api_port: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PENNY_")}
        env.update(
            PENNY_DATABASE_URL=database, PENNY_REDIS_URL=redis_url,
            PENNY_DATA_DIR=str(self.run_dir / "data"), PENNY_MODELS_DIR=str(MODELS_DIR),
            PENNY_API_PORT=str(api_port), PENNY_API_KEYS=json.dumps(
                {key: tenant for tenant, key in self.keys.items()}),
            PENNY_EMBEDDING_MODELS="{}", PENNY_ENGINE_ENFORCE_EAGER="true",
            PENNY_LEASE_SECONDS=str(self.plan.lease_seconds),
            PENNY_MAX_BATCH_JOBS=str(self.plan.max_batch_jobs),
            PENNY_SWEEP_INTERVAL_SECONDS="1", PENNY_REDISPATCH_AFTER_SECONDS="10",
            PENNY_WORKER_HEARTBEAT_SECONDS="2", PENNY_MAX_ATTEMPTS="6",
            PENNY_DATABASE_RETRY_SECONDS="60",
            # Two engines share the machine's memory: small KV caches.
            PENNY_ENGINE_KV_CACHE_GIB="1",
        )
        return env

    def run(self) -> ChaosReport:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with ExitStack() as stack:
            postgres, redis_server, database = stack.enter_context(self._services())
            api_port = free_port()
            env = self._env(database, redis_server.url(), api_port)
            subprocess.run([str(PENNY), "migrate"], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            fleet = _Fleet(self.run_dir, env)
            stack.callback(fleet.stop_all)
            url = f"http://127.0.0.1:{api_port}"
            clients = {tenant: _Client(url, key, self.report)
                       for tenant, key in self.keys.items()}
            for client in clients.values():
                stack.callback(client.close)
            self._started = time.monotonic()
            fleet.start("api", "api")
            fleet.start("coalescer", "coalescer")
            for w in range(self.plan.workers):
                fleet.start(f"worker-{w}", "worker", "--verbose")
            self._play(fleet, postgres, redis_server, clients, postgres.url("penny_chaos"))
            self.report.seconds = time.monotonic() - self._started
            self._audit(postgres.url("penny_chaos"), clients)
        return self.report

    def _submit_wave(self, clients: dict[str, _Client], wave: int) -> None:
        per_wave = -(-self.plan.jobs_per_tenant // self.plan.waves)
        for tenant, client in clients.items():
            start = wave * per_wave
            count = min(per_wave, self.plan.jobs_per_tenant - start)
            if count <= 0:
                continue
            jobs = [{"prompt": f"{tenant} job {i}: say {i}.",
                     "max_tokens": self.plan.max_tokens, "custom_id": f"{tenant}-{i}"}
                    for i in range(start, start + count)]
            response = client.send("POST", "/v1/jobs/bulk", json={"jobs": jobs},
                                   headers={"Idempotency-Key": f"{tenant}-wave-{wave}"})
            if response.status_code != 202:
                raise RuntimeError(f"wave {wave} of {tenant}: {response.status_code} "
                                   f"{response.text}")
            self.job_ids[tenant].extend(response.json()["job_ids"])

    def _play(self, fleet: _Fleet, postgres: PrivatePostgres, redis_server: PrivateRedis,
              clients: dict[str, _Client], database: str) -> None:
        def count(sql: str) -> int:
            # A connection per look: the server is restarted under the harness too.
            with psycopg.connect(database, connect_timeout=2) as db:
                return _one(db, sql)

        def succeeded() -> int:
            return count("SELECT count(*) FROM jobs WHERE status = 'succeeded'")

        def batch_running() -> bool:
            return count("SELECT count(*) FROM batches WHERE status = 'running'") > 0

        def worker_running_a_batch() -> str | None:
            """The role name of a worker holding a running batch, if any."""
            with psycopg.connect(database, connect_timeout=2) as db:
                holders = {worker for (worker,) in db.execute(
                    "SELECT worker_id FROM batches WHERE status = 'running'")}
            for name, worker_id in fleet.worker_ids().items():
                if worker_id in holders:
                    return name
            return None

        def kill_a_worker_mid_batch(fallback: str) -> None:
            name, when = fallback, "between batches"
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                fleet.check_alive()
                with suppress(psycopg.Error):
                    holder = worker_running_a_batch()
                    if holder is not None:
                        name, when = holder, "mid-batch"
                        break
                time.sleep(0.1)
            fleet.kill(name)
            self._fault(f"SIGKILL {name} ({when}); restarted")
            fleet.start(name, "worker", "--verbose")

        waves = iter(range(self.plan.waves))
        self._submit_wave(clients, next(waves))
        _wait(lambda: succeeded() > 0, 600, "the first jobs to succeed",
              check=fleet.check_alive)
        self._fault("first jobs succeeded (workers up)")
        kill_a_worker_mid_batch("worker-0")

        self._submit_wave(clients, next(waves, 0))
        redis_server.wipe_and_restart()
        self._fault("Redis FLUSHALL and restart (every queued message lost)")

        done = succeeded()
        _wait(lambda: succeeded() > done, 300, "progress after the Redis wipe",
              check=fleet.check_alive)
        fleet.kill("coalescer")
        self._fault("SIGKILL coalescer; restarted")
        fleet.start("coalescer", "coalescer")

        for wave in waves:
            self._submit_wave(clients, wave)
        with suppress(TimeoutError):
            _wait(batch_running, 120, "a batch to run", interval=0.05)
        postgres.stop("immediate")
        self._fault("Postgres immediate stop (crash)")
        time.sleep(3)
        postgres.start()
        self._fault("Postgres restarted")

        done = succeeded()
        _wait(lambda: succeeded() > done, 300, "progress after the Postgres restart",
              check=fleet.check_alive)
        kill_a_worker_mid_batch(f"worker-{self.plan.workers - 1}")

        total = sum(len(ids) for ids in self.job_ids.values())
        _wait(lambda: count("SELECT count(*) FROM jobs WHERE status IN "
                            "('succeeded', 'failed', 'cancelled', 'expired')") >= total,
              self.plan.finish_within_seconds, "every job to end", interval=1.0,
              check=fleet.check_alive)
        self._fault("every job ended")

    def _audit(self, database: str, clients: dict[str, _Client]) -> None:
        report = self.report
        submitted = {job_id for ids in self.job_ids.values() for job_id in ids}
        report.submitted = len(submitted)
        with psycopg.connect(database) as db:
            rows = db.execute("SELECT id::text, tenant_id, status, attempts FROM jobs").fetchall()
            report.jobs = len(rows)
            for _, _, status, _ in rows:
                report.by_status[status] = report.by_status.get(status, 0) + 1
            ended = {job_id for job_id, _, status, _ in rows if status in TERMINAL}
            report.lost = len(submitted - ended)
            report.duplicate_executions = sum(max(attempts - 1, 0)
                                              for _, _, _, attempts in rows)
            report.duplicate_results = _one(db, "SELECT count(*) - count(DISTINCT job_id) "
                                                "FROM results")
            report.double_billed = _one(db, "SELECT count(*) - count(DISTINCT job_id) "
                                            "FROM ledger_entries")
            report.unbilled = _one(db, "SELECT count(*) FROM jobs j WHERE j.status = "
                                       "'succeeded' AND NOT EXISTS (SELECT 1 FROM "
                                       "ledger_entries l WHERE l.job_id = j.id)")
            report.cross_tenant = _one(
                db, "SELECT count(*) FROM ledger_entries l JOIN jobs j ON j.id = l.job_id "
                    "JOIN submissions s ON s.id = j.submission_id "
                    "WHERE l.tenant_id <> j.tenant_id OR s.tenant_id <> j.tenant_id")
            report.batches_by_status = dict(db.execute(
                "SELECT status, count(*) FROM batches GROUP BY status").fetchall())
        report.cross_tenant += self._cross_tenant_reads(clients)

    def _cross_tenant_reads(self, clients: dict[str, _Client]) -> int:
        """Each tenant reads a few of the next tenant's jobs: anything but a 404 crosses."""
        tenants = list(clients)
        crossed = 0
        for position, tenant in enumerate(tenants):
            other = tenants[(position + 1) % len(tenants)]
            for job_id in self.job_ids[other][:5]:
                if clients[tenant].send("GET", f"/v1/jobs/{job_id}").status_code != 404:
                    crossed += 1
            own = clients[tenant].send("GET", f"/v1/jobs/{self.job_ids[tenant][0]}")
            if own.status_code != 200:
                crossed += 1  # a tenant must read its own job
        return crossed


def _one(db: psycopg.Connection[Any], sql: str) -> int:
    row = db.execute(sql).fetchone()
    return int(row[0]) if row and row[0] is not None else 0
