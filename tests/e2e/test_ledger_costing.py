"""The ledger's counterfactual on the real engine: a calibration probe measured on it, and
a real run whose every ledger row names its calibration and card, adds up, and credits the
prefix cache, batching and single-flight where they happened; the submission's totals are
the sum of its rows."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from intake.limits import IntakeLimits
from intake.schema import JobRequest
from intake.service import jobs_for_requests, request_hash, submit
from ledger.attribution import SAVING_COLUMNS
from ledger.cost_model import seconds_decimal
from ledger.report import totals
from models.costing import latest_calibration, list_calibrations, store_calibration
from models.ledger_sums import ledger_sums
from models.reports import job_records
from models.tables import Job, LedgerEntry
from models.tenants import ensure_tenant
from penny.runtime import Runtime
from tests.support import wait_until
from workers.calibration_probe import run_probe
from workers.inprocess import InProcessPipeline
from workers.vllm_engine import VllmEngine

pytestmark = pytest.mark.engine

SYSTEM = ("You are the archivist of a harbour museum. Answer in one short sentence, plainly, "
          "and say so when you do not know. ") * 4


def ask(question: str) -> dict[str, Any]:
    return {"messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": question}], "max_tokens": 16}


QUESTIONS = ["When was the lighthouse built?", "What is a tide table?",
             "Name a kind of sailing ship.", "Why do harbours have breakwaters?"]


def test_a_real_run_is_costed_against_a_measured_counterfactual(
    runtime: Runtime, engine: VllmEngine,
) -> None:
    # A budget no loaded test machine reaches: this test needs the calibration made.
    settings = runtime.settings.model_copy(update={"calibration_batch_jobs": 8,
                                                   "calibration_budget_seconds": 3600.0})
    speed = run_probe(engine, settings, repeats=1)
    assert speed.decode_s_per_token_bs1 > 0
    assert 0 <= speed.decode_s_per_token_full <= speed.decode_s_per_token_bs1
    assert speed.machine["cpus"] and speed.engine_settings["engine_max_model_len"]
    assert len(speed.samples) == 7  # six shapes alone, one batch
    assert speed.machine["fit_error"] >= 0 and speed.machine["probe_seconds"] > 0
    # The context term is fitted, never negative; how large it is depends on the machine's
    # load during the probe (bench/ledger_bench.py measures it), so only its sign is checked.
    assert speed.decode_s_per_context_token >= 0
    with runtime.sessions() as session:
        calibration = store_calibration(session, engine.model_name, speed)
        assert latest_calibration(session, engine.model_name) == calibration
        [listed] = [c for c in list_calibrations(session, engine.model_name)
                    if c.id == calibration.id]
    assert calibration.decode_s_per_context_token == seconds_decimal(
        speed.decode_s_per_context_token)
    assert listed.decode_s_per_context_token == speed.decode_s_per_context_token

    payloads = [ask(q) for q in QUESTIONS] + [ask(QUESTIONS[0])]  # the last is a copy
    jobs = jobs_for_requests([JobRequest.model_validate(p) for p in payloads],
                             IntakeLimits.from_settings(settings))
    with runtime.sessions() as session:
        stored = submit(session, tenant=ensure_tenant(session, "acme"), kind="bulk",
                        jobs=jobs, payload_hash=request_hash([time.time_ns()]))
    submission_id = stored.submission.id

    def done() -> bool:
        with runtime.sessions() as session:
            states = session.execute(select(Job.status).where(
                Job.submission_id == submission_id)).scalars().all()
        return all(s in ("succeeded", "failed") for s in states)

    with InProcessPipeline(runtime, [engine]):
        wait_until(done, timeout=240, what="jobs to finish")

    with runtime.sessions() as session:
        rows = list(session.execute(select(LedgerEntry).where(
            LedgerEntry.submission_id == submission_id)).scalars())
        sums = ledger_sums(session, submission_id=submission_id)
        records = job_records(session, submission_id)
        session.expunge_all()
    assert len(rows) == len(payloads)  # one billed row per job
    by_job = {row.job_id: row for row in rows}
    for row in rows:
        assert row.calibration_id == calibration.id and row.price_card_id is not None
        parts = sum((getattr(row, c) for c in SAVING_COLUMNS), Decimal(0))
        assert row.naive_cost_usd - row.cost_usd == parts + row.unexplained_usd
        assert row.naive_cost_usd > 0
    engine_rows = [r for r in rows if r.served_by == "engine"]
    copies = [r for r in rows if r.served_by == "single_flight"]
    assert len(copies) == 1
    [copy] = copies
    leader = by_job[uuid.UUID(str(copy.source_job_id))]
    assert copy.cost_usd == 0 and copy.saving_single_flight_usd == leader.naive_cost_usd
    # The shared system prompt came from the prefix cache for all but the first to run,
    # and the jobs shared an engine call.
    assert sum(r.cached_tokens for r in engine_rows) > 0
    for r in engine_rows:
        if r.cached_tokens == 0:
            assert r.saving_prefix_cache_usd == 0
        elif calibration.prefill_s_per_token > 0:
            assert r.saving_prefix_cache_usd > 0
    assert sum(r.saving_batching_usd for r in engine_rows) > 0

    # Totals are the sum of the rows, to the token and to the cent.
    assert sums.savings.naive_cost_usd == sum(r.naive_cost_usd for r in rows)
    assert sums.cost_usd == sum(r.cost_usd for r in rows)
    assert sums.output_tokens == sum(r.output_tokens for r in rows)
    for column, mechanism in zip(SAVING_COLUMNS, sums.savings.savings, strict=True):
        assert sums.savings.savings[mechanism] == sum(getattr(r, column) for r in rows)
    assert totals(records).savings == sums.savings
