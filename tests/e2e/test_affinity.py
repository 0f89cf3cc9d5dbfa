"""Prefix affinity with two real `penny worker` processes: each system prompt's batches go
to one worker, whose prefix cache then already holds it for the next wave; a hot prefix
spills to the other worker once its favourite reaches the load bound."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from coalescer.affinity import preference_order
from coalescer.runner import Coalescer
from intake.limits import IntakeLimits
from intake.schema import JobRequest
from intake.service import jobs_for_requests, request_hash, submit
from models.tables import Batch, Job, Result
from models.tenants import ensure_tenant
from models.workers import live_workers
from penny.runtime import Runtime, open_runtime
from tests.e2e.test_distributed import start_worker
from tests.support import make_settings, wait_until
from workers.celery_app import CeleryDispatcher, make_celery
from workers.chat_tokenizer import ChatTokenizer

pytestmark = pytest.mark.engine

GROUP = 6  # jobs per batch: one prefix group fills one batch
SYSTEMS = {
    name: (f"You are the {name} desk of a shipping firm. " + " ".join(
        f"Rule {i}: {name} requests about parcel class {i} need a tracking number."
        for i in range(14)))
    for name in ("north", "south")
}


@pytest.fixture
def two_workers(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Runtime]:
    settings = make_settings(tmp_path, database_url, redis_url=redis_url,
                             max_batch_jobs=GROUP, worker_heartbeat_seconds=1.0)
    runtime = open_runtime(settings)
    model = settings.default_model
    coalescer = Coalescer(settings, runtime.sessions, CeleryDispatcher(make_celery(settings)),
                          runtime.store, [model], {model: ChatTokenizer.for_model(settings,
                                                                                  model)})
    logs = open(tmp_path / "workers.log", "wb")  # noqa: SIM115 - closed below
    # One core each, as one would pin one worker per GPU: two engines spinning on the same
    # cores would slow each other down many times over.
    workers = [start_worker(settings, logs, {"PENNY_WORKER_HEARTBEAT_SECONDS": "1.0",
                                             "VLLM_CPU_OMP_THREADS_BIND": str(core)})
               for core in range(2)]
    stop = threading.Event()
    thread = threading.Thread(target=coalescer.run, args=(stop,), daemon=True)
    try:
        def both_live() -> bool:
            with runtime.sessions() as session:
                return len(live_workers(session, 3.0).get(model, [])) == 2

        wait_until(both_live, timeout=240, what="two workers to start and say hello")
        thread.start()
        yield runtime
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()
        for process in workers:
            process.terminate()
            process.wait(timeout=60)
        logs.close()
        runtime.close()


def wave(runtime: Runtime, tag: str, counts: dict[str, int], max_tokens: int = 4) -> list[Any]:
    payloads = [
        {"messages": [{"role": "system", "content": SYSTEMS[name]},
                      {"role": "user", "content": f"Question {tag}-{i}: where is parcel {i}?"}],
         "max_tokens": max_tokens, "custom_id": f"{tag}-{name}-{i}"}
        for name, count in counts.items() for i in range(count)
    ]
    jobs = jobs_for_requests([JobRequest.model_validate(p) for p in payloads],
                             IntakeLimits.from_settings(runtime.settings))
    with runtime.sessions() as session:
        stored = submit(session, tenant=ensure_tenant(session, "acme"), kind="bulk", jobs=jobs,
                        payload_hash=request_hash([time.time_ns()]))
    ids = stored.job_ids

    def done() -> bool:
        with runtime.sessions() as session:
            states = session.execute(select(Job.status).where(Job.id.in_(ids))).scalars()
            return all(s == "succeeded" for s in states)

    wait_until(done, timeout=300, what=f"wave {tag} to finish")
    return list(ids)


def batches_of(runtime: Runtime, tag: str, name: str) -> list[tuple[str, str, int]]:
    """(worker that ran it, prefix key, shared prefix tokens) per batch of this group."""
    with runtime.sessions() as session:
        rows = session.execute(
            select(Batch.id, Batch.worker_id, Batch.prefix_key, Batch.shared_prefix_tokens)
            .join(Job, Job.batch_id == Batch.id)
            .where(Job.custom_id.like(f"{tag}-{name}-%")).distinct()
        ).all()
    return [(str(w), str(k), int(s)) for _, w, k, s in rows]


def test_each_prefix_sticks_to_a_worker_and_a_hot_prefix_spills(
    two_workers: Runtime,
) -> None:
    runtime = two_workers
    wave(runtime, "w1", {"north": GROUP, "south": GROUP})
    second = wave(runtime, "w2", {"north": GROUP, "south": GROUP})

    for name in SYSTEMS:
        ran = batches_of(runtime, "w1", name) + batches_of(runtime, "w2", name)
        assert len(ran) == 2, ran  # one batch per wave: the group was never split
        assert len({key for _, key, _ in ran}) == 1  # same prefix key both waves
        assert len({worker for worker, _, _ in ran}) == 1, ran  # same worker both waves

    # The second wave found its prefix already cached on its worker: every job, including
    # the first of each batch, skipped at least the shared system prompt's whole blocks.
    shared = min(s for name in SYSTEMS for _, _, s in batches_of(runtime, "w2", name))
    assert shared > 100
    with runtime.sessions() as session:
        cached = session.execute(
            select(Result.cached_tokens).where(Result.job_id.in_(second))).scalars().all()
    block = runtime.settings.engine_block_size or 16
    assert len(cached) == 2 * GROUP
    assert all(c >= shared // block * block for c in cached), (shared, cached)

    # A hot prefix: four batches' worth of one system prompt, long enough answers that
    # batches queue up. Its favourite worker takes batches up to the load bound and the
    # other worker takes the rest.
    wave(runtime, "hot", {"north": 4 * GROUP}, max_tokens=48)
    hot = batches_of(runtime, "hot", "north")
    assert len(hot) == 4
    per_worker = Counter(worker for worker, _, _ in hot)
    with runtime.sessions() as session:
        workers = sorted(session.execute(select(Batch.worker_id).distinct()).scalars())
    favourite = preference_order(hot[0][1], workers)[0]
    assert len(per_worker) == 2, per_worker
    assert per_worker[favourite] >= 2, per_worker
