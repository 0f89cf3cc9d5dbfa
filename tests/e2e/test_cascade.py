"""The cascade on the real engine: a pruned copy of the offline model as the cheap tier,
the full model as the next. An answer cut off at max_tokens escalates through the same
coalescer and batches as everything else; both attempts are billed, the client sees one
job with the final answer; a confident answer stays on the cheap tier."""

from __future__ import annotations

import json
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from intake.limits import IntakeLimits
from intake.schema import JobRequest
from intake.service import jobs_for_requests, request_hash, submit
from models.batches import progress_of
from models.tables import Batch, Job, LedgerEntry, Submission
from models.tenants import ensure_tenant
from penny.runtime import open_runtime
from penny.settings import (
    OFFLINE_MODEL_NAME,
    OFFLINE_PRUNED_MODEL_NAME,
    OFFLINE_PRUNED_SOURCE,
    OFFLINE_SOURCE,
)
from tests.support import make_settings, reset_tables, wait_until
from workers.finalize import output_keys
from workers.inprocess import InProcessPipeline
from workers.vllm_engine import VllmEngine

pytestmark = pytest.mark.engine

SMALL, LARGE = OFFLINE_PRUNED_MODEL_NAME, OFFLINE_MODEL_NAME


@pytest.fixture(scope="session")
def small_engine(tmp_path_factory: pytest.TempPathFactory) -> VllmEngine:
    """The pruned tier's engine, kept for the whole session: a vLLM engine collected while
    another lives in the process tears down the parallel state that one still uses (the
    session's shared engine then fails every batch after this test)."""
    settings = make_settings(tmp_path_factory.mktemp("small-engine"), "postgresql://unused",
                             models={SMALL: OFFLINE_PRUNED_SOURCE, LARGE: OFFLINE_SOURCE})
    return VllmEngine(settings, SMALL)


def test_cascade_escalates_what_is_cut_off_and_keeps_what_is_not(
    tmp_path: Path, database_url: str, engine: VllmEngine, small_engine: VllmEngine
) -> None:
    settings = make_settings(
        tmp_path, database_url,
        models={SMALL: OFFLINE_PRUNED_SOURCE, LARGE: OFFLINE_SOURCE},
        tiers=[SMALL, LARGE],
        # Only finish_reason "length" escalates here, so which job escalates is certain.
        cascade_min_mean_logprob=-100.0)
    runtime = open_runtime(settings)
    reset_tables(runtime)
    cut_off = {"model": "cascade", "max_tokens": 3, "custom_id": "cut",
               "messages": [{"role": "user", "content": "Describe the sea in detail."}]}
    confident = {"model": "cascade", "max_tokens": 48, "custom_id": "ok",
                 "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    jobs = jobs_for_requests([JobRequest.model_validate(p) for p in (cut_off, confident)],
                             IntakeLimits.from_settings(settings))
    with runtime.sessions() as session:
        stored = submit(session, tenant=ensure_tenant(session, "acme"), kind="bulk",
                        jobs=jobs, payload_hash=request_hash([time.time_ns()]))
    submission_id = stored.submission.id
    cut_id, ok_id = stored.job_ids

    def done() -> bool:
        with runtime.sessions() as session:
            return session.get(Submission, submission_id).status == "completed"  # type: ignore[union-attr]

    try:
        with InProcessPipeline(runtime, [small_engine, engine]):
            wait_until(done, timeout=300, what="the submission to complete")
        with runtime.sessions() as session:
            rows = {j.id: j for j in session.execute(
                select(Job).where(Job.submission_id == submission_id)).scalars()}
            ledger = {e.job_id: e for e in session.execute(
                select(LedgerEntry).where(LedgerEntry.submission_id == submission_id)).scalars()}
            batches = {b.id: b.model for b in session.execute(select(Batch)).scalars()}
            progress = progress_of(session, [submission_id])[submission_id]
            outputs = session.get(Submission, submission_id).outputs  # type: ignore[union-attr]
    finally:
        runtime.close()

    attempts = [j for j in rows.values() if j.cascade_of is not None]
    assert len(attempts) == 1
    attempt = attempts[0]
    assert (attempt.cascade_of, attempt.status, attempt.model) == (cut_id, "escalated", SMALL)
    escalated = rows[cut_id]
    assert (escalated.status, escalated.model) == ("succeeded", LARGE)
    assert escalated.route["attempts"][0]["job_id"] == str(attempt.id)
    assert "cut off at max_tokens" in escalated.route["reason"]
    # The escalation rode an ordinary batch of the large tier.
    assert batches[escalated.batch_id] == LARGE  # type: ignore[index]
    assert batches[attempt.batch_id] == SMALL  # type: ignore[index]
    # Both attempts are billed, each on its own row; the kept job once, on the small tier.
    assert ledger[attempt.id].model == SMALL and ledger[attempt.id].cost_usd > 0
    assert ledger[attempt.id].route.startswith("cascade: escalated to")  # type: ignore[union-attr]
    assert ledger[cut_id].model == LARGE and ledger[cut_id].cost_usd > 0
    assert ledger[ok_id].model == SMALL
    assert ledger[ok_id].route == f"cascade: confident on the first try ({SMALL})"
    assert rows[ok_id].status == "succeeded"
    assert progress.cost.cost_usd == sum((e.cost_usd for e in ledger.values()), Decimal(0))
    # The client sees two jobs with one answer each; the ledger file bills three rows.
    assert progress.counts == {"succeeded": 2}
    assert outputs is not None
    store, keys = runtime.store, output_keys(submission_id)
    results = [json.loads(line) for line in store.get(keys["results"]).decode().splitlines()]
    assert sorted(r["custom_id"] for r in results) == ["cut", "ok"]
    document = json.loads(store.get(keys["ledger_json"]))
    assert len(document["entries"]) == 3
    assert document["totals"]["jobs"] == 2 and document["totals"]["escalated_attempts"] == 1
    assert {uuid.UUID(e["job_id"]) for e in document["entries"]} == set(ledger)
