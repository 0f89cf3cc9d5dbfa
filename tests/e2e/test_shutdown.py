"""`penny up` on SIGTERM, as a real process on the embedded default: it stops taking work,
finishes the batch it is running, hands back the batch it took but never started, exits 0
and stops the embedded Postgres it started."""

from __future__ import annotations

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


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def penny_up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    data_dir, port = tmp_path / "data", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PENNY_")}
    env.update(PENNY_DATA_DIR=str(data_dir), PENNY_MODELS_DIR=str(MODELS_DIR),
               PENNY_API_PORT=str(port), PENNY_EMBEDDING_MODELS="{}",
               # Small batches: one runs while the next waits in the worker's queue.
               PENNY_MAX_BATCH_JOBS="4")
    log = (tmp_path / "penny-up.log").open("wb")
    process = subprocess.Popen([str(Path(sys.executable).with_name("penny")), "up"],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process, f"http://127.0.0.1:{port}", data_dir
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


def test_sigterm_finishes_the_running_batch_releases_the_rest_and_stops_postgres(
    penny_up: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    process, url, data_dir = penny_up

    def answers() -> bool:
        assert process.poll() is None, "penny up exited before it served"
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(answers, timeout=600, what="penny up to serve", interval=0.5)
    postmaster = int((data_dir / "pg" / "postmaster.pid").read_text().split()[0])
    jobs = [{"prompt": f"Count slowly from 1 to 100, then say done. Run {i}.",
             "max_tokens": 96, "custom_id": f"job-{i}"} for i in range(12)]
    accepted = httpx.post(f"{url}/v1/jobs/bulk", json={"jobs": jobs}, timeout=30).json()

    def one_running_one_waiting() -> bool:
        statuses = {httpx.get(f"{url}/v1/jobs/{job_id}", timeout=5).json()["status"]
                    for job_id in accepted["job_ids"]}
        return {"running", "batched"} <= statuses

    wait_until(one_running_one_waiting, timeout=300,
               what="a batch to run and the next to wait for the worker", interval=0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=600) == 0
    assert not alive(postmaster)  # the embedded Postgres stopped with it
    assert not (data_dir / "pg" / "postmaster.pid").exists()

    with warnings.catch_warnings():
        # Importing the server's wheel warns where XDG_RUNTIME_DIR is unset (as here);
        # penny up itself imported it without complaint.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        database = start_embedded_postgres(data_dir)  # look at what it left behind
    try:
        with psycopg.connect(database) as conn:
            batches = conn.execute(
                "SELECT b.status, b.dispatched_at IS NULL, count(j.id), "
                "array_agg(DISTINCT j.status) FROM batches b JOIN jobs j ON j.batch_id = b.id "
                "GROUP BY b.id").fetchall()
            unbatched = conn.execute(
                "SELECT count(*) FROM jobs WHERE batch_id IS NULL AND status <> 'queued'"
            ).fetchone()
    finally:
        stop_embedded_postgres(data_dir)
    assert unbatched == (0,)
    statuses = sorted((status, released, job_states) for status, released, _, job_states
                      in batches)
    # The batch that was running finished and was recorded; none is left leased.
    assert ("done", False, ["succeeded"]) in statuses
    assert all(status in ("done", "pending") for status, _, _ in statuses), statuses
    # A batch it took but never started is handed back to be sent again at once: not
    # claimed (no attempt burned), marked never sent.
    assert any(status == "pending" for status, _, _ in statuses), statuses
    assert all(released and job_states == ["batched"]
               for status, released, job_states in statuses if status == "pending"), statuses
