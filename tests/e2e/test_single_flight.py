"""Single-flight on the real engine: identical deterministic jobs in flight together run
once and fan out; each copy's ledger row shows what it saved; sampled jobs and other
tenants' jobs are never merged."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from intake.limits import IntakeLimits
from intake.schema import JobRequest
from intake.service import jobs_for_requests, request_hash, submit
from models.status import BatchStatus
from models.tables import Batch, Job, LedgerEntry, Result
from models.tenants import ensure_tenant
from penny.runtime import Runtime, open_runtime
from tests.support import make_settings, reset_tables, wait_until
from workers.inprocess import InProcessPipeline
from workers.vllm_engine import VllmEngine

pytestmark = pytest.mark.engine

GREEDY = {"messages": [{"role": "user", "content": "Name three colours of the rainbow."}],
          "max_tokens": 12}
SAMPLED = {**GREEDY, "temperature": 0.9}
SEEDED = {**GREEDY, "temperature": 0.9, "seed": 11}


def queue(runtime: Runtime, tenant: str, payloads: list[dict[str, Any]]) -> list[uuid.UUID]:
    jobs = jobs_for_requests([JobRequest.model_validate(p) for p in payloads],
                             IntakeLimits.from_settings(runtime.settings))
    with runtime.sessions() as session:
        stored = submit(session, tenant=ensure_tenant(session, tenant), kind="bulk", jobs=jobs,
                        payload_hash=request_hash([time.time_ns()]))
    return stored.job_ids


def finished(runtime: Runtime, ids: list[uuid.UUID]) -> bool:
    with runtime.sessions() as session:
        states = session.execute(select(Job.status).where(Job.id.in_(ids))).scalars().all()
    return all(s in ("succeeded", "failed") for s in states)


def ledger_of(runtime: Runtime, ids: list[uuid.UUID]) -> list[tuple[LedgerEntry, Result]]:
    with runtime.sessions() as session:
        rows = session.execute(
            select(LedgerEntry, Result).join(Result, Result.job_id == LedgerEntry.job_id)
            .where(LedgerEntry.job_id.in_(ids))
        ).all()
        session.expunge_all()
    by_job = {ledger.job_id: (ledger, result) for ledger, result in rows}
    return [by_job[i] for i in ids]


def test_identical_jobs_run_once_and_every_copy_is_answered(
    runtime: Runtime, engine: VllmEngine
) -> None:
    greedy = queue(runtime, "acme", [GREEDY, GREEDY, GREEDY])
    seeded = queue(runtime, "acme", [SEEDED, SEEDED])
    sampled = queue(runtime, "acme", [SAMPLED, SAMPLED])
    other_tenant = queue(runtime, "globex", [GREEDY])
    everything = greedy + seeded + sampled + other_tenant
    with InProcessPipeline(runtime, [engine]):
        wait_until(lambda: finished(runtime, everything), timeout=240, what="jobs to finish")

    copies = ledger_of(runtime, greedy)
    leaders = [(ledger, result) for ledger, result in copies if ledger.served_by == "engine"]
    followers = [(ledger, result) for ledger, result in copies if ledger.served_by != "engine"]
    assert len(leaders) == 1 and len(followers) == 2
    leader_ledger, leader_result = leaders[0]
    assert leader_ledger.cost_usd > 0 and leader_result.text.strip()
    for ledger, result in followers:
        assert ledger.served_by == "single_flight"
        assert ledger.source_job_id == leader_ledger.job_id
        assert ledger.cost_usd == Decimal(0) and ledger.engine_seconds == 0
        assert ledger.single_flight_saved_usd == leader_ledger.cost_usd
        assert ledger.list_cost_usd == leader_ledger.list_cost_usd
        assert (result.text, result.output_tokens) == (leader_result.text,
                                                       leader_result.output_tokens)

    seeded_rows = ledger_of(runtime, seeded)
    assert sorted(ledger.served_by for ledger, _ in seeded_rows) == ["engine", "single_flight"]
    assert all(ledger.served_by == "engine" for ledger, _ in ledger_of(runtime, sampled))
    assert all(ledger.served_by == "engine" for ledger, _ in ledger_of(runtime, other_tenant))

    with runtime.sessions() as session:
        ran = session.execute(select(func.sum(Batch.job_count))).scalar_one()
        billed = session.execute(select(func.count(LedgerEntry.job_id.distinct()))).scalar_one()
        results = session.execute(select(func.count()).select_from(Result)).scalar_one()
    assert ran == len(everything) - 3  # two greedy copies and one seeded copy never ran
    assert billed == results == len(everything)


def test_a_copy_arriving_while_its_twin_runs_joins_it(
    runtime: Runtime, engine: VllmEngine
) -> None:
    # The model writes numbers until max_tokens for this one (checked greedy, float32).
    long_job = {"messages": [{"role": "user", "content": "Write the numbers from 1 to 300, "
                                                         "separated by commas."}],
                "max_tokens": 400}
    with InProcessPipeline(runtime, [engine]):
        first = queue(runtime, "acme", [long_job])

        def running() -> bool:
            with runtime.sessions() as session:
                return session.execute(select(func.count()).select_from(Batch).where(
                    Batch.status == BatchStatus.RUNNING)).scalar_one() == 1

        wait_until(running, timeout=60, what="the first job's batch to start", interval=0.02)
        second = queue(runtime, "acme", [long_job])
        wait_until(lambda: finished(runtime, first + second), timeout=240,
                   what="both jobs to finish")
    (leader, leader_result), (copy, copy_result) = ledger_of(runtime, first + second)
    assert leader.served_by == "engine" and leader_result.output_tokens > 100
    assert copy.served_by == "single_flight" and copy.source_job_id == leader.job_id
    assert copy_result.text == leader_result.text
    with runtime.sessions() as session:
        assert session.execute(select(func.count()).select_from(Batch)).scalar_one() == 1


def test_tenants_never_share_a_prefix_cache_entry(runtime: Runtime, engine: VllmEngine) -> None:
    system = "You answer questions about the tide tables of small harbours. " * 12

    def ask(tenant: str, question: str) -> Result:
        ids = queue(runtime, tenant, [{"messages": [{"role": "system", "content": system},
                                                    {"role": "user", "content": question}],
                                       "max_tokens": 4}])
        wait_until(lambda: finished(runtime, ids), timeout=120, what=f"{tenant}'s job")
        return ledger_of(runtime, ids)[0][1]

    engine.llm.reset_prefix_cache()
    with InProcessPipeline(runtime, [engine]):
        first = ask("acme", "When is high tide?")
        stranger = ask("globex", "When is low tide?")
        again = ask("acme", "When is the next spring tide?")
    assert first.cached_tokens == 0
    assert stranger.cached_tokens == 0  # same prompt prefix, other tenant: no reuse
    assert again.cached_tokens >= 128  # same tenant: the system prompt came from cache


def test_copies_beyond_the_planning_horizon_join_their_leader(
    tmp_path: Path, database_url: str, engine: VllmEngine
) -> None:
    # Each window sees two jobs; the copies sit at the end of the queue, windows behind
    # their leader, and would otherwise be planned only after it had finished.
    runtime = open_runtime(make_settings(tmp_path, database_url, max_batch_jobs=2,
                                         plan_horizon_batches=1, max_pending_batches=1))
    reset_tables(runtime)
    try:
        questions = [{"messages": [{"role": "user", "content": f"Spell the number {n}."}],
                      "max_tokens": 4} for n in range(6)]
        ids = queue(runtime, "acme", [*questions, questions[0], questions[0]])
        with InProcessPipeline(runtime, [engine]):
            wait_until(lambda: finished(runtime, ids), timeout=240, what="jobs to finish")
        rows = ledger_of(runtime, ids)
        leader = rows[0][0]
        assert leader.served_by == "engine"
        assert [ledger.served_by for ledger, _ in rows[6:]] == ["single_flight"] * 2
        assert all(ledger.source_job_id == leader.job_id for ledger, _ in rows[6:])
        with runtime.sessions() as session:
            ran = session.execute(select(func.sum(Batch.job_count))).scalar_one()
        assert ran == 6
    finally:
        runtime.close()
