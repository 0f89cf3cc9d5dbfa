"""A batch waiting for a busy engine keeps taking arrivals until a worker takes it: the
engine's next call runs everything queued before it could start. Every job still lands in
exactly one batch, copies join their leader, a taken batch never grows, and the halves of a
batch split after the engine raised take nothing. Real Postgres; no engine needed."""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from coalescer.runner import Coalescer
from intake.limits import IntakeLimits
from intake.schema import JobRequest
from intake.service import jobs_for_requests, request_hash, submit
from models.failover import fail_over
from models.queue import ClaimedBatch, claim_batch, queued_snapshot
from models.status import JobStatus
from models.tables import Batch, Job
from models.tenants import ensure_tenant
from penny.runtime import Runtime, open_runtime
from tests.support import make_settings, reset_tables
from workers.inprocess import LocalDispatcher


@pytest.fixture
def quiet(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    # The test ticks the coalescer itself; the sweeper must not re-send batches meanwhile.
    settings = make_settings(tmp_path, database_url, sweep_interval_seconds=600.0,
                             window_min_ms=1, window_max_ms=1)
    runtime = open_runtime(settings)
    reset_tables(runtime)
    yield runtime
    runtime.close()


def queue_jobs(runtime: Runtime, questions: list[str]) -> list[uuid.UUID]:
    requests = [JobRequest(prompt=q, max_tokens=4) for q in questions]
    jobs = jobs_for_requests(requests, IntakeLimits.from_settings(runtime.settings))
    with runtime.sessions() as session:
        stored = submit(session, tenant=ensure_tenant(session, "t"), kind="bulk", jobs=jobs,
                        payload_hash=request_hash([time.time_ns()]))
        return list(session.execute(select(Job.id).where(
            Job.submission_id == stored.submission.id).order_by(Job.line_no)).scalars())


def tick_until(coalescer: Coalescer, done: object, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        coalescer.tick()
        if callable(done) and done():
            return
        time.sleep(0.01)
    raise AssertionError("the coalescer did not get there")


def jobs_of(runtime: Runtime, batch_id: uuid.UUID) -> dict[uuid.UUID, uuid.UUID | None]:
    """Every job parked on the batch -> its leader (None for the jobs the engine runs)."""
    with runtime.sessions() as session:
        rows = session.execute(select(Job.id, Job.leader_job_id)
                               .where(Job.batch_id == batch_id)).all()
    return {row.id: row.leader_job_id for row in rows}


def status_of(runtime: Runtime, job_id: uuid.UUID) -> str:
    with runtime.sessions() as session:
        return str(session.execute(select(Job.status).where(Job.id == job_id)).scalar_one())


def claim(runtime: Runtime, batch_id: uuid.UUID) -> ClaimedBatch:
    with runtime.sessions() as session:
        claimed = claim_batch(session, batch_id, "worker-1", 60)
    assert claimed is not None
    return claimed


def test_a_waiting_batch_takes_arrivals_until_a_worker_takes_it(quiet: Runtime) -> None:
    model = quiet.settings.default_model
    dispatcher = LocalDispatcher([model])
    doorbells: queue.Queue[uuid.UUID] = dispatcher.queues[model]
    coalescer = Coalescer(quiet.settings, quiet.sessions, dispatcher, quiet.store, [model])

    running = queue_jobs(quiet, ["running one", "running two"])
    tick_until(coalescer, lambda: not doorbells.empty())
    first = doorbells.get_nowait()
    claim(quiet, first)  # the engine runs the first batch now

    planned = queue_jobs(quiet, ["waiting one"])
    tick_until(coalescer, lambda: not doorbells.empty())
    waiting = doorbells.get_nowait()
    assert set(jobs_of(quiet, waiting)) == set(planned)

    # The engine is busy and its next batch is planned: later arrivals join that batch,
    # copies of a job in it or in the running batch join their leader there.
    arrivals = queue_jobs(quiet, ["late one", "late two", "waiting one", "running one"])
    tick_until(coalescer, lambda: all(status_of(quiet, j) == JobStatus.BATCHED
                                      for j in arrivals))
    assert doorbells.empty(), "no new batch: the waiting one took them"
    grown = jobs_of(quiet, waiting)
    assert grown == {planned[0]: None, arrivals[0]: None, arrivals[1]: None,
                     arrivals[2]: planned[0]}
    assert jobs_of(quiet, first)[arrivals[3]] == running[0]
    with quiet.sessions() as session:
        assert session.get_one(Batch, waiting).job_count == 3
        positions = sorted(session.execute(select(Job.batch_position).where(
            Job.batch_id == waiting, Job.leader_job_id.is_(None))).scalars())
    assert positions == [0, 1, 2]

    # The worker takes the grown batch whole ...
    taken = claim(quiet, waiting)
    assert {job.id for job in taken.jobs} == {planned[0], arrivals[0], arrivals[1]}
    # ... and from then on it grows no more: what arrives next is the next batch's.
    after = queue_jobs(quiet, ["after the hand-off"])
    tick_until(coalescer, lambda: not doorbells.empty())
    assert set(jobs_of(quiet, doorbells.get_nowait())) == set(after)
    assert set(jobs_of(quiet, waiting)) == set(grown)
    assert coalescer.stats.jobs_topped_up == 4


def test_the_halves_of_a_failed_batch_take_no_arrivals(quiet: Runtime) -> None:
    model = quiet.settings.default_model
    dispatcher = LocalDispatcher([model])
    doorbells: queue.Queue[uuid.UUID] = dispatcher.queues[model]
    coalescer = Coalescer(quiet.settings, quiet.sessions, dispatcher, quiet.store, [model])
    queue_jobs(quiet, ["one", "two", "three", "four"])
    tick_until(coalescer, lambda: not doorbells.empty())
    batch = claim(quiet, doorbells.get_nowait())
    with quiet.sessions() as session:
        halves = fail_over(session, batch, max_attempts=3, reason="boom").rerun
    assert len(halves) == 2
    before = {half: set(jobs_of(quiet, half)) for half in halves}

    arrivals = queue_jobs(quiet, ["five"])
    for _ in range(5):  # both halves wait: the engine has no room, and they take nothing
        coalescer.tick()
        time.sleep(0.01)
    assert {half: set(jobs_of(quiet, half)) for half in halves} == before
    assert status_of(quiet, arrivals[0]) == JobStatus.QUEUED


def test_with_growing_off_arrivals_wait_for_the_batch_after(quiet: Runtime) -> None:
    settings = quiet.settings.model_copy(update={"grow_waiting_batches": False})
    model = settings.default_model
    dispatcher = LocalDispatcher([model])
    doorbells: queue.Queue[uuid.UUID] = dispatcher.queues[model]
    coalescer = Coalescer(settings, quiet.sessions, dispatcher, quiet.store, [model])
    queue_jobs(quiet, ["running"])
    tick_until(coalescer, lambda: not doorbells.empty())
    claim(quiet, doorbells.get_nowait())
    planned = queue_jobs(quiet, ["waiting"])
    tick_until(coalescer, lambda: not doorbells.empty())
    waiting = doorbells.get_nowait()

    late = queue_jobs(quiet, ["late"])
    for _ in range(5):
        coalescer.tick()
        time.sleep(0.01)
    assert set(jobs_of(quiet, waiting)) == set(planned)
    assert status_of(quiet, late[0]) == JobStatus.QUEUED
    claim(quiet, waiting)
    tick_until(coalescer, lambda: not doorbells.empty())
    assert set(jobs_of(quiet, doorbells.get_nowait())) == set(late)


def test_the_queue_counts_prompt_tokens_toward_a_full_batch(quiet: Runtime) -> None:
    """A window closes at once when a full batch waits; the budget counts prompts, so a
    queue of small prompts with large max_tokens is not a full batch by tokens."""
    requests = [JobRequest(prompt="x" * 300, max_tokens=1000, n=2),
                JobRequest(prompt="y" * 30, max_tokens=10)]
    jobs = jobs_for_requests(requests, IntakeLimits.from_settings(quiet.settings))
    with quiet.sessions() as session:
        submit(session, tenant=ensure_tenant(session, "t"), kind="bulk", jobs=jobs,
               payload_hash=request_hash([time.time_ns()]))
        estimated = sum(job.estimated_tokens for job in jobs)
        snapshot = queued_snapshot(session, [quiet.settings.default_model],
                                   timedelta(seconds=60))
    assert snapshot.jobs == 2
    assert snapshot.tokens == estimated - 2 * 1000 - 10
