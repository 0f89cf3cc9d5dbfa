"""Distributed mode on real parts: a separate `penny worker` process consumes batches from
Redis; killing it with SIGKILL mid-batch loses nothing and bills nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from coalescer.runner import Coalescer
from models.status import BatchStatus
from models.tables import Batch, Job, LedgerEntry, Result
from penny.runtime import Runtime, open_runtime
from penny.settings import Settings
from tests.support import make_settings, reset_tables, wait_until
from workers.celery_app import CeleryDispatcher, make_celery

pytestmark = pytest.mark.engine

LEASE_SECONDS = 6.0


@pytest.fixture
def distributed(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Runtime]:
    settings = make_settings(tmp_path, database_url, redis_url=redis_url,
                             lease_seconds=LEASE_SECONDS, max_batch_jobs=24)
    runtime = open_runtime(settings)
    reset_tables(runtime)  # the test counts every job in the database
    coalescer = Coalescer(settings, runtime.sessions, CeleryDispatcher(make_celery(settings)),
                          runtime.store, list(settings.models))
    stop = threading.Event()
    thread = threading.Thread(target=coalescer.run, args=(stop,), daemon=True)
    thread.start()
    yield runtime
    stop.set()
    thread.join()
    runtime.close()


def start_worker(settings: Settings, log: IO[bytes],
                 extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PENNY_DATABASE_URL": settings.database_url or "",
        "PENNY_REDIS_URL": settings.redis_url or "",
        "PENNY_DATA_DIR": str(settings.data_dir),
        "PENNY_MODELS_DIR": str(settings.resolved_models_dir),
        "PENNY_LEASE_SECONDS": str(settings.lease_seconds),
        "PENNY_ENGINE_ENFORCE_EAGER": "true",
        **(extra_env or {}),
    }
    penny = Path(sys.executable).with_name("penny")
    return subprocess.Popen([str(penny), "worker", "--verbose"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def job_payloads(count: int, max_tokens: int, tag: str) -> list[dict[str, object]]:
    return [
        {"messages": [{"role": "user", "content": f"Tell a short story about robot {i}."}],
         "max_tokens": max_tokens, "custom_id": f"{tag}-{i}"}
        for i in range(count)
    ]


def statuses(runtime: Runtime) -> dict[str, int]:
    with runtime.sessions() as session:
        rows = session.execute(select(Job.status, func.count()).group_by(Job.status))
        return {status: int(n) for status, n in rows}


def test_worker_process_survives_sigkill_mid_batch(
    distributed: Runtime, tmp_path: Path
) -> None:
    runtime = distributed
    client = TestClient(create_app(runtime))
    logs = open(tmp_path / "workers.log", "wb")  # noqa: SIM115 - closed in finally
    first = start_worker(runtime.settings, logs)
    second: subprocess.Popen[bytes] | None = None
    try:
        warmup = client.post("/v1/jobs/bulk", json={"jobs": job_payloads(12, 8, "warm")})
        assert warmup.status_code == 202
        wait_until(lambda: statuses(runtime) == {"succeeded": 12}, timeout=240,
                   what="the worker process to finish the first jobs")

        work = client.post("/v1/jobs/bulk", json={"jobs": job_payloads(24, 96, "kill")})
        assert work.status_code == 202

        def batch_running() -> bool:
            with runtime.sessions() as session:
                return session.execute(
                    select(func.count()).select_from(Batch)
                    .where(Batch.status == BatchStatus.RUNNING)
                ).scalar_one() > 0

        wait_until(batch_running, timeout=60, what="a batch to start running", interval=0.1)
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert statuses(runtime).get("running", 0) == 24  # killed with all 24 in flight

        second = start_worker(runtime.settings, logs)
        wait_until(lambda: statuses(runtime) == {"succeeded": 36}, timeout=300,
                   what="the replacement worker to finish every job")
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
        logs.close()

    with runtime.sessions() as session:
        ledger_jobs = session.execute(select(LedgerEntry.job_id)).scalars().all()
        result_jobs = session.execute(select(Result.job_id)).scalars().all()
        attempts = session.execute(
            select(Job.attempts).where(Job.custom_id.like("kill-%"))
        ).scalars().all()
        retried_batches = session.execute(
            select(func.count()).select_from(Batch).where(Batch.attempts >= 2)
        ).scalar_one()
    assert len(ledger_jobs) == len(set(ledger_jobs)) == 36
    assert len(result_jobs) == len(set(result_jobs)) == 36
    assert retried_batches == 1
    assert sorted(attempts) == [2] * 24


def test_worker_sigterm_finishes_its_running_batch_then_exits(
    distributed: Runtime, tmp_path: Path
) -> None:
    """A warm shutdown: the batch in flight when SIGTERM arrives is finished and recorded
    once, nothing is left leased to the stopped worker, and the process exits cleanly."""
    runtime = distributed
    client = TestClient(create_app(runtime))
    with open(tmp_path / "worker.log", "wb") as log:
        worker = start_worker(runtime.settings, log)
        try:
            work = client.post("/v1/jobs/bulk", json={"jobs": job_payloads(8, 48, "term")})
            assert work.status_code == 202

            def batch_running() -> bool:
                with runtime.sessions() as session:
                    return session.execute(
                        select(func.count()).select_from(Batch)
                        .where(Batch.status == BatchStatus.RUNNING)
                    ).scalar_one() > 0

            wait_until(batch_running, timeout=300, what="the worker to start the batch",
                       interval=0.1)
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=300) == 0
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    log_text = (tmp_path / "worker.log").read_text(errors="replace")
    # The signal came while the batch ran: the shutdown began before the batch was recorded.
    assert "Warm shutdown" in log_text, log_text[-3000:]
    assert log_text.index("Warm shutdown") < log_text.index(" recorded: 8 succeeded")

    assert statuses(runtime) == {"succeeded": 8}, log_text[-3000:]
    with runtime.sessions() as session:
        batches = session.execute(select(Batch.status, Batch.attempts)).all()
        ledger_jobs = session.execute(select(LedgerEntry.job_id)).scalars().all()
        result_jobs = session.execute(select(Result.job_id)).scalars().all()
    assert [(status, attempts) for status, attempts in batches] == [(BatchStatus.DONE, 1)]
    assert len(ledger_jobs) == len(set(ledger_jobs)) == 8
    assert len(result_jobs) == len(set(result_jobs)) == 8
