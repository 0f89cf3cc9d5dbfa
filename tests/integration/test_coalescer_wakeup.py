"""In embedded mode the coalescer sleeps through a running batch instead of polling beside
the engine, and the in-process worker wakes it: when the worker takes a batch, the next
one is planned at once, while the engine runs. Real Postgres; no engine needed."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from coalescer.runner import Coalescer
from intake.limits import IntakeLimits
from intake.schema import JobRequest
from intake.service import jobs_for_requests, request_hash, submit
from models.queue import claim_batch
from models.tables import Job
from models.tenants import ensure_tenant
from penny.runtime import Runtime, open_runtime
from tests.support import make_settings, reset_tables
from workers.inprocess import LocalDispatcher

NEVER = 600_000  # ms: any poll this slow would time the test out


@pytest.fixture
def sleepy(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    # A waiting batch that takes arrivals is tested on its own
    # (test_waiting_batch_top_up.py); here it would race the test's own arrivals.
    settings = make_settings(tmp_path, database_url, idle_poll_interval_ms=NEVER,
                             busy_poll_interval_ms=NEVER, sweep_interval_seconds=NEVER / 1000,
                             grow_waiting_batches=False)
    runtime = open_runtime(settings)
    reset_tables(runtime)
    yield runtime
    runtime.close()


def queue_jobs(runtime: Runtime, questions: list[str]) -> set[uuid.UUID]:
    requests = [JobRequest(prompt=q, max_tokens=4) for q in questions]
    jobs = jobs_for_requests(requests, IntakeLimits.from_settings(runtime.settings))
    with runtime.sessions() as session:
        stored = submit(session, tenant=ensure_tenant(session, "t"), kind="bulk", jobs=jobs,
                        payload_hash=request_hash([time.time_ns()]))
        return set(session.execute(select(Job.id).where(
            Job.submission_id == stored.submission.id)).scalars())


def batch_jobs(runtime: Runtime, batch_id: uuid.UUID) -> set[uuid.UUID]:
    with runtime.sessions() as session:
        return set(session.execute(select(Job.id).where(Job.batch_id == batch_id)).scalars())


def test_taking_a_batch_wakes_the_coalescer_to_plan_the_next(sleepy: Runtime) -> None:
    model = sleepy.settings.default_model
    dispatcher = LocalDispatcher([model])
    batches: queue.Queue[uuid.UUID] = dispatcher.queues[model]
    coalescer = Coalescer(sleepy.settings, sleepy.sessions, dispatcher, sleepy.store, [model],
                          local_workers=True)
    first = queue_jobs(sleepy, ["one", "two"])
    stop = threading.Event()
    thread = threading.Thread(target=coalescer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        batch = batches.get(timeout=60)
        assert batch_jobs(sleepy, batch) == first
        # The engine's next batch is waiting, so the coalescer sleeps (its polls are
        # slower than this test may take); work queued now is not planned yet ...
        second = queue_jobs(sleepy, ["three"])
        with pytest.raises(queue.Empty):
            batches.get(timeout=1)
        # ... until the worker takes the waiting batch: then the next one is planned while
        # the engine runs the first.
        with sleepy.sessions() as session:
            assert claim_batch(session, batch, "in-process", 60) is not None
        coalescer.batch_started()
        assert batch_jobs(sleepy, batches.get(timeout=60)) == second
        coalescer.batch_finished()
    finally:
        stop.set()
        coalescer.wake()
        thread.join(timeout=60)
    assert not thread.is_alive(), "the coalescer did not notice the stop"
