"""An engine that raises fails its batch over at once, on the real engine and pipeline: the
batch is bisected until the job that breaks the engine runs alone, its batch-mates succeed
(billed once), and the culprit is tried `max_attempts` times alone, then fails with the
engine's reason."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from coalescer.runner import Coalescer
from models.status import BatchStatus
from models.tables import Batch, Job, LedgerEntry, Result
from penny.runtime import Runtime, open_runtime
from tests.support import make_settings, reset_tables, wait_until
from workers.engine import BatchGeneration, GenerationRequest
from workers.execution import BatchRunner, EngineBroken, GenerationExecutor
from workers.inprocess import InProcessPipeline
from workers.vllm_engine import VllmEngine

pytestmark = pytest.mark.engine

POISON = "POISON"


class FaultyEngine:
    """The real engine, with a fault injected: it raises on any batch holding a request
    that mentions POISON (as a request that crashes a kernel would), and on the first
    `fail_first` batches whatever they hold (a passing fault)."""

    def __init__(self, engine: VllmEngine, fail_first: int = 0,
                 work_before_failing: bool = False) -> None:
        self.engine, self.fail_first = engine, fail_first
        self.work_before_failing = work_before_failing  # generate, then raise anyway
        self.failed_seconds = 0.0  # what the real engine ran in calls that then raised
        self.calls: list[int] = []  # batch sizes, in order
        self.canaries = 0  # one-token probes the worker sent after a failure
        self._generated = 0

    @property
    def model_name(self) -> str:
        return self.engine.model_name

    def prompt_token_ids(self, request: GenerationRequest) -> list[int]:
        return self.engine.prompt_token_ids(request)

    def generate(self, requests: Sequence[GenerationRequest]) -> BatchGeneration:
        if [r.key for r in requests] == ["canary"]:
            self.canaries += 1
        else:
            self.calls.append(len(requests))
        self._generated += 1
        if self._generated <= self.fail_first:
            if self.work_before_failing:
                self.failed_seconds += self.engine.generate(requests).engine_seconds
            raise RuntimeError("engine core died (injected)")
        if any(POISON in (r.prompt or "") + "".join(c for _, c in r.messages or ())
               for r in requests):
            raise RuntimeError("illegal memory access (injected)")
        return self.engine.generate(requests)


def _run(tmp_path: Path, database_url: str, engine: FaultyEngine, jobs: list[dict[str, Any]],
         **overrides: object) -> tuple[Runtime, list[str]]:
    settings = make_settings(tmp_path, database_url, max_batch_jobs=len(jobs), **overrides)
    runtime = open_runtime(settings)
    reset_tables(runtime)
    client = TestClient(create_app(runtime))
    accepted = client.post("/v1/jobs/bulk", json={"jobs": jobs})
    assert accepted.status_code == 202, accepted.text
    ids: list[str] = accepted.json()["job_ids"]

    def all_ended() -> bool:
        states = {client.get(f"/v1/jobs/{i}").json()["status"] for i in ids}
        return states <= {"succeeded", "failed"}

    # Every job is queued before the pipeline starts: they make one batch.
    with InProcessPipeline(runtime, [engine]):  # type: ignore[list-item]
        wait_until(all_ended, timeout=300, what="every job to end", interval=0.3)
    return runtime, ids


def _jobs(count: int, poison_at: Sequence[int] = ()) -> list[dict[str, Any]]:
    return [{"prompt": f"{POISON if i in poison_at else 'Say'} the number {i}.",
             "max_tokens": 4, "custom_id": f"job-{i}"} for i in range(count)]


def _rows(runtime: Runtime) -> tuple[dict[str, Job], list[Any], list[Any], Counter[str]]:
    with runtime.sessions() as session:
        jobs = {j.custom_id or "": j for j in session.execute(select(Job)).scalars()}
        ledger = list(session.execute(select(LedgerEntry.job_id)).scalars())
        results = list(session.execute(select(Result.job_id)).scalars())
        batches = Counter(session.execute(select(Batch.status)).scalars())
    return jobs, ledger, results, batches


def test_a_poison_job_is_bisected_out_and_its_batch_mates_succeed(
    tmp_path: Path, database_url: str, engine: VllmEngine
) -> None:
    faulty = FaultyEngine(engine)
    runtime, _ = _run(tmp_path, database_url, faulty, _jobs(8, poison_at=[5]), max_attempts=2)
    try:
        jobs, ledger, results, batches = _rows(runtime)
    finally:
        runtime.close()
    poison = jobs.pop("job-5")
    assert poison.status == "failed"
    assert poison.error is not None and poison.error["code"] == "engine_error"
    assert "illegal memory access (injected)" in poison.error["message"]
    assert poison.attempts == 2  # tried twice alone; the splits burned none
    assert {j.status for j in jobs.values()} == {"succeeded"}
    # Bisection: 8 -> 4 + 4 -> 2 + 2 -> 1 + 1, and the lone culprit once more.
    assert faulty.calls[:1] == [8] and sorted(faulty.calls) == sorted([8, 4, 4, 2, 2, 1, 1, 1])
    assert batches[BatchStatus.SPLIT] == 3 and batches[BatchStatus.FAILED] == 1
    # Every batch-mate is billed once and has one result; the culprit neither.
    assert sorted(ledger) == sorted(results) == sorted(j.id for j in jobs.values())
    assert {j.attempts for j in jobs.values()} == {1}


def test_a_passing_engine_fault_costs_a_rerun_and_nothing_else(
    tmp_path: Path, database_url: str, engine: VllmEngine
) -> None:
    # The first call runs the whole batch on the real engine, then raises: its seconds
    # are real cost.
    faulty = FaultyEngine(engine, fail_first=1, work_before_failing=True)
    runtime, ids = _run(tmp_path, database_url, faulty, _jobs(6))
    try:
        jobs, ledger, results, batches = _rows(runtime)
        with runtime.sessions() as session:
            rows = list(session.execute(select(LedgerEntry)).scalars())
            carried = [b.failover_seconds for b in session.execute(
                select(Batch).where(Batch.status == BatchStatus.DONE)).scalars()]
        rate = runtime.settings.price_for(runtime.settings.default_model).engine_hour_usd
    finally:
        runtime.close()
    assert {j.status for j in jobs.values()} == {"succeeded"}
    assert faulty.calls == [6, 3, 3]  # the halves ran at once, not after a lease
    assert faulty.canaries == 1  # the engine answered the probe: the batch, not it, broke
    assert len(ledger) == len(set(ledger)) == len(results) == len(ids)
    assert batches == Counter({BatchStatus.SPLIT: 1, BatchStatus.DONE: 2})
    # The raising call's seconds went with the halves, half each, and every job paid an
    # equal share in its one row, shown as a failover loss (the rows' CHECK says the parts
    # still add up).
    assert sum(carried) >= faulty.failed_seconds > 0
    assert carried[0] == pytest.approx(carried[1])
    losses = [-r.saving_failover_usd for r in rows]
    assert all(loss > 0 for loss in losses)
    billed = Decimal(repr(sum(carried))) * rate / 3600
    assert abs(sum(losses, Decimal(0)) - billed) <= Decimal("0.0000000001") * len(rows)
    assert all(r.cost_usd >= loss for r, loss in zip(rows, losses, strict=True))


def test_a_lone_poison_job_is_tried_max_attempts_times_then_fails(
    tmp_path: Path, database_url: str, engine: VllmEngine
) -> None:
    faulty = FaultyEngine(engine)
    runtime, _ = _run(tmp_path, database_url, faulty, _jobs(1, poison_at=[0]),
                      max_attempts=3)
    try:
        jobs, ledger, results, _ = _rows(runtime)
        with runtime.sessions() as session:
            unfinished = session.execute(
                select(func.count()).select_from(Batch)
                .where(Batch.status.in_([BatchStatus.PENDING, BatchStatus.RUNNING]))
            ).scalar_one()
    finally:
        runtime.close()
    assert faulty.calls == [1, 1, 1]
    job = jobs["job-0"]
    assert (job.status, job.attempts) == ("failed", 3)
    assert job.error is not None
    assert job.error["message"].startswith("the engine failed on this request 3 time(s)")
    assert ledger == results == [] and unfinished == 0


def test_requests_a_failed_call_left_in_vllm_never_come_back_with_the_next_batch(
    engine: VllmEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call that raises midway leaves its requests inside vLLM; `LLM.generate` runs until
    none is unfinished, so without the abort they would come back with the next batch."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    llm_engine = engine.llm.llm_engine
    ids = engine.tokenizer.encode("A request left behind.")
    llm_engine.add_request("left-behind", TokensPrompt(prompt_token_ids=ids),
                           SamplingParams(max_tokens=4))
    assert llm_engine.has_unfinished_requests()

    def engine_dies(*_: object, **__: object) -> list[object]:
        raise RuntimeError("engine step failed (injected)")

    with monkeypatch.context() as patch:
        patch.setattr(engine.llm, "generate", engine_dies)
        with pytest.raises(RuntimeError, match="injected"):
            engine.generate([GenerationRequest.from_stored(
                "a", {"prompt": "Say hi.", "sampling": {"max_tokens": 2, "temperature": 0,
                                                        "top_p": 1}}, cache_salt="t")])
    assert not llm_engine.has_unfinished_requests()
    answered = engine.generate([GenerationRequest.from_stored(
        "b", {"prompt": "Say hi.", "sampling": {"max_tokens": 2, "temperature": 0,
                                                "top_p": 1}}, cache_salt="t")])
    assert [g.key for g in answered.generations] == ["b"] and answered.generations[0].ok


class Doorbells:
    def __init__(self) -> None:
        self.rung: list[uuid.UUID] = []

    def dispatch(self, batch_id: uuid.UUID, model: str, worker: str | None = None) -> None:
        self.rung.append(batch_id)


def test_a_broken_engine_hands_its_batch_back_whole_and_its_worker_stops(
    tmp_path: Path, database_url: str, engine: VllmEngine
) -> None:
    """When even a one-token canary fails, the engine is broken, not the batch: bisecting
    would fail every job this worker takes. The batch goes back untouched (no attempt
    burned) for another worker, and this one stops."""
    settings = make_settings(tmp_path, database_url, max_batch_jobs=4)
    runtime = open_runtime(settings)
    try:
        reset_tables(runtime)
        client = TestClient(create_app(runtime))
        assert client.post("/v1/jobs/bulk", json={"jobs": _jobs(4)}).status_code == 202
        doorbells = Doorbells()
        coalescer = Coalescer(settings, runtime.sessions, doorbells, runtime.store,
                              list(settings.models))
        for _ in range(50):
            if coalescer.tick():
                break
        (batch_id,) = doorbells.rung
        broken = FaultyEngine(engine, fail_first=2)  # the batch, then the canary
        runner = BatchRunner(settings, runtime.sessions, GenerationExecutor(broken, settings),
                             runtime.store, "worker-broken")
        with pytest.raises(EngineBroken):
            runner.run(batch_id)
        assert (broken.calls, broken.canaries) == ([4], 1)
        with runtime.sessions() as session:
            batch = session.execute(select(Batch).where(Batch.id == batch_id)).scalar_one()
            jobs = list(session.execute(select(Job)).scalars())
        assert (batch.status, batch.attempts, batch.worker_id, batch.dispatched_at) == (
            BatchStatus.PENDING, 0, None, None)  # never sent: the next sweep sends it
        assert {(j.status, j.attempts, j.error is None) for j in jobs} == {
            ("batched", 0, True)}

        healthy = BatchRunner(settings, runtime.sessions, GenerationExecutor(engine, settings),
                              runtime.store, "worker-healthy")
        assert healthy.run(batch_id).recorded
        jobs, ledger, results, _ = _rows(runtime)
    finally:
        runtime.close()
    assert {(j.status, j.attempts) for j in jobs.values()} == {("succeeded", 1)}
    assert len(ledger) == len(results) == 4
