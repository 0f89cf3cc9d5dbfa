"""The ledger's counterfactual against a real Postgres: rows costed at record time name
the card and calibration they used and add up (the database checks it too), cache hits
and single-flight copies save their whole naive cost, totals equal the sum of rows, the
ledger is append-only and a batch recorded twice bills once. The engine is replaced by
scripted generations recorded through the worker's own code; the e2e test runs the real one."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from api.app import create_app
from cache.model_identity import cache_policy
from coalescer.planning import PlannedBatch
from ledger.attribution import SAVING_COLUMNS
from ledger.cost_model import money
from ledger.savings import SavingsTotals
from models.batches import cancel_batch
from models.costing import MeasuredSpeed, latest_calibration, store_calibration
from models.ledger_sums import ledger_sums
from models.queue import (
    ClaimedBatch,
    claim_batch,
    claim_queued_jobs,
    create_batches,
    record_batch,
    sweep_expired_leases,
)
from models.tables import Job, LedgerEntry
from penny.runtime import Runtime, open_runtime
from tests.support import make_settings, reset_tables
from workers.cascade import judge_cascade
from workers.engine import Generation
from workers.execution import outcomes_for
from workers.ledger_costing import LedgerCosting

ACME = {"Authorization": "Bearer key-acme"}
SPEED = MeasuredSpeed(request_overhead_s=0.02, prefill_s_per_token=0.0002,
                      decode_s_per_token_bs1=0.02, decode_s_per_token_full=0.002,
                      full_batch_jobs=64, machine={"cpus": 2}, engine_settings={},
                      samples=[])


@pytest.fixture
def keyed(tmp_path: Path, database_url: str) -> Iterator[tuple[Runtime, TestClient]]:
    settings = make_settings(tmp_path, database_url, api_keys={"key-acme": "acme"})
    runtime = open_runtime(settings)
    reset_tables(runtime)
    try:
        with TestClient(create_app(runtime)) as client:
            yield runtime, client
    finally:
        runtime.close()


def answered(request: dict[str, Any]) -> Generation:
    question = request["messages"][-1]["content"]
    return Generation(key="", text=f"answer to {question}", finish_reason="stop",
                      prompt_tokens=40, cached_tokens=32, output_tokens=6)


def claim_queued(runtime: Runtime, model: str | None = None) -> ClaimedBatch:
    model = model or runtime.settings.default_model
    with runtime.sessions() as session:
        rows = claim_queued_jobs(session, model, 1000, timedelta(0))
        plan = PlannedBatch(model=model, job_ids=tuple(r.job.id for r in rows),
                            estimated_tokens=0)
        [batch_id] = create_batches(session, [plan], [None])
        session.commit()
    with runtime.sessions() as session:
        batch = claim_batch(session, batch_id, "scripted-worker", 30)
    assert batch is not None
    return batch


def record(runtime: Runtime, batch: ClaimedBatch, engine_seconds: float = 0.3) -> bool:
    """Cost and record a claimed batch as BatchRunner does."""
    settings = runtime.settings
    outcomes = outcomes_for(batch, [answered(job.request) for job in batch.jobs],
                            engine_seconds, settings)
    costed = LedgerCosting(settings, runtime.sessions).cost(batch, outcomes)
    with runtime.sessions() as session:
        return record_batch(session, batch, costed, engine_seconds,
                            cache_policy(settings, [batch.model]))


def post(client: TestClient, content: str) -> dict[str, Any]:
    response = client.post("/v1/jobs", headers=ACME, json={
        "messages": [{"role": "user", "content": content}], "max_tokens": 16})
    assert response.status_code == 202, response.text
    return dict(response.json())


def rows(runtime: Runtime) -> list[LedgerEntry]:
    with runtime.sessions() as session:
        found = list(session.execute(select(LedgerEntry).order_by(LedgerEntry.id)).scalars())
        session.expunge_all()
    return found


def parts(row: LedgerEntry) -> Decimal:
    return sum((getattr(row, c) for c in SAVING_COLUMNS), Decimal(0)) + row.unexplained_usd


def test_rows_name_their_versions_and_add_up_and_hits_save_their_naive_cost(
    keyed: tuple[Runtime, TestClient],
) -> None:
    runtime, client = keyed
    with runtime.sessions() as session:
        calibration = store_calibration(session, runtime.settings.default_model, SPEED)
    for question in ("a", "b", "c"):
        post(client, question)
    assert record(runtime, claim_queued(runtime))
    engine_rows = rows(runtime)
    assert len(engine_rows) == 3
    for row in engine_rows:
        assert row.calibration_id == calibration.id and row.price_card_id is not None
        assert row.baseline_model == runtime.settings.default_model
        assert row.naive_cost_usd - row.cost_usd == parts(row)
        # Alone and uncached the model says 0.02 + 40 * 0.0002 + 6 * 0.02 s; the job ran
        # with 32 prompt tokens from the prefix cache in a batch of three.
        assert row.naive_cost_usd == money(Decimal("0.148") * Decimal("0.10") / 3600)
        assert row.saving_prefix_cache_usd > 0 and row.saving_batching_usd > 0
        assert row.saving_routing_usd == row.saving_output_limit_usd == 0

    hit = post(client, "a")  # the exact result cache answers it in the request
    assert hit["status"] == "succeeded"
    [hit_row] = [r for r in rows(runtime) if r.job_id == uuid.UUID(hit["id"])]
    source = next(r for r in engine_rows if r.job_id == hit_row.source_job_id)
    assert hit_row.cost_usd == 0
    assert hit_row.naive_cost_usd == hit_row.saving_exact_cache_usd == source.naive_cost_usd
    assert hit_row.calibration_id == calibration.id

    # A submission's totals are the sum of its rows, to the cent and beyond.
    everything = rows(runtime)
    with runtime.sessions() as session:
        tenant_total = ledger_sums(session, tenant_id=everything[0].tenant_id)
    expected = SavingsTotals.of_rows(
        [{c: getattr(r, c) for c in ("cost_usd", "naive_cost_usd", "unexplained_usd",
                                     *SAVING_COLUMNS)} for r in everything])
    assert tenant_total.savings == expected
    assert tenant_total.jobs == 4
    assert tenant_total.output_tokens == sum(r.output_tokens for r in everything)


def test_without_a_calibration_no_saving_is_claimed(keyed: tuple[Runtime, TestClient]) -> None:
    runtime, client = keyed
    post(client, "a")
    assert record(runtime, claim_queued(runtime))
    [row] = rows(runtime)
    assert row.calibration_id is None and row.price_card_id is not None
    assert row.naive_cost_usd == row.cost_usd > 0 and parts(row) == 0


def test_the_ledger_refuses_updates_deletes_and_rows_that_do_not_add_up(
    keyed: tuple[Runtime, TestClient],
) -> None:
    runtime, client = keyed
    post(client, "a")
    assert record(runtime, claim_queued(runtime))
    for statement in ("UPDATE ledger_entries SET cost_usd = 0",
                      "DELETE FROM ledger_entries"):
        with pytest.raises(DBAPIError, match="append-only"), runtime.db.begin() as conn:
            conn.execute(text(statement))
    with pytest.raises(DBAPIError, match="attribution_adds_up"), runtime.db.begin() as conn:
        conn.execute(text(
            "INSERT INTO ledger_entries (job_id, tenant_id, submission_id, model, input_tokens,"
            " cached_tokens, output_tokens, engine_seconds, cost_usd, list_cost_usd,"
            " naive_cost_usd) SELECT job_id, tenant_id, submission_id, model, 1, 0, 1, 1, 1, 1,"
            " 5 FROM ledger_entries"))
    assert len(rows(runtime)) == 1


def test_a_batch_recorded_twice_bills_once(keyed: tuple[Runtime, TestClient]) -> None:
    """A redelivered task, or a worker that lost its lease and finished anyway: the second
    recording writes nothing."""
    runtime, client = keyed
    post(client, "a")
    post(client, "b")
    batch = claim_queued(runtime)
    assert record(runtime, batch)
    assert not record(runtime, batch)
    assert len(rows(runtime)) == 2


def test_a_worker_lost_mid_batch_and_a_resubmitted_batch_bill_once(
    keyed: tuple[Runtime, TestClient],
) -> None:
    """The first worker's lease runs out mid-batch (it was killed, or stalled); the sweeper
    hands the batch to a second worker, which records it. The first worker's late write is
    refused. Resubmitting the same request with the same Idempotency-Key adds no job."""
    runtime, client = keyed
    body = {"messages": [{"role": "user", "content": "a"}], "max_tokens": 16,
            "cache": "off"}
    headers = {**ACME, "Idempotency-Key": "once"}
    first = client.post("/v1/jobs", headers=headers, json=body)
    assert first.status_code == 202, first.text
    model = runtime.settings.default_model
    with runtime.sessions() as session:
        rows_ = claim_queued_jobs(session, model, 10, timedelta(0))
        [batch_id] = create_batches(session, [PlannedBatch(
            model=model, job_ids=tuple(r.job.id for r in rows_), estimated_tokens=0)], [None])
        session.commit()
    with runtime.sessions() as session:
        lost = claim_batch(session, batch_id, "worker-that-dies", 0.05)
    assert lost is not None
    time.sleep(0.3)  # let its lease run out
    with runtime.sessions() as session:
        swept = sweep_expired_leases(session, max_attempts=3, redispatch_after_seconds=60)
    assert [b for b, _ in swept.requeued] == [batch_id]
    with runtime.sessions() as session:
        second = claim_batch(session, batch_id, "worker-that-lives", 30)
    assert second is not None
    assert record(runtime, second)
    assert not record(runtime, lost)

    again = client.post("/v1/jobs", headers=headers, json=body)
    assert again.status_code in (200, 202) and again.json()["id"] == first.json()["id"]
    [row] = rows(runtime)
    assert row.job_id == uuid.UUID(first.json()["id"])


def test_the_calibrations_cli_lists_versions_and_calibrate_refuses_an_unknown_model(
    keyed: tuple[Runtime, TestClient], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from penny.cli import app

    runtime, _ = keyed
    model = runtime.settings.default_model
    with runtime.sessions() as session:
        store_calibration(session, model, SPEED)
        second = store_calibration(session, model, SPEED)
    monkeypatch.setenv("PENNY_DATABASE_URL", runtime.database_url)
    monkeypatch.setenv("PENNY_DATA_DIR", str(runtime.settings.data_dir))
    monkeypatch.setenv("COLUMNS", "250")  # rich: one row per line
    cli = CliRunner()
    listed = cli.invoke(app, ["calibrations", "--model", model])
    assert listed.exit_code == 0, listed.output
    lines = [line for line in listed.output.splitlines() if model in line]
    assert len(lines) == 2 and f" {second.id} " in lines[0]  # newest first
    assert "20.000" in lines[0]  # decode alone, ms per token
    refused = cli.invoke(app, ["calibrate", "no-such-model"])
    assert refused.exit_code != 0 and "no-such-model" in refused.output


def test_calibrate_with_no_time_budget_says_it_was_skipped_and_stores_nothing(
    keyed: tuple[Runtime, TestClient], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from penny.cli import app

    runtime, _ = keyed
    model = runtime.settings.default_model
    monkeypatch.setenv("PENNY_DATABASE_URL", runtime.database_url)
    monkeypatch.setenv("PENNY_DATA_DIR", str(runtime.settings.data_dir))
    monkeypatch.setenv("PENNY_CALIBRATION_BUDGET_SECONDS", "0")
    skipped = CliRunner().invoke(app, ["calibrate", model])
    assert skipped.exit_code == 1, skipped.output
    assert "calibration skipped" in skipped.output and "nothing was stored" in skipped.output
    assert "PENNY_CALIBRATION_BUDGET_SECONDS" in skipped.output
    with runtime.sessions() as session:
        assert latest_calibration(session, model) is None


def test_a_calibrated_baseline_model_prices_the_naive_way_and_routing_gets_the_gap(
    tmp_path: Path, database_url: str,
) -> None:
    settings = make_settings(tmp_path, database_url, api_keys={"key-acme": "acme"},
                             ledger_baseline_model="big",
                             prices={"big": {"engine_hour_usd": "1.00"}})
    runtime = open_runtime(settings)
    reset_tables(runtime)
    try:
        with TestClient(create_app(runtime)) as client:
            post(client, "a")
            # Uncalibrated, the baseline is not used: no routing saving is guessed.
            with runtime.sessions() as session:
                store_calibration(session, settings.default_model, SPEED)
            assert record(runtime, claim_queued(runtime))
            post(client, "b")
            with runtime.sessions() as session:
                big = store_calibration(session, "big", SPEED)
            assert record(runtime, claim_queued(runtime))
        before, after = rows(runtime)
    finally:
        runtime.close()
    assert before.baseline_model == settings.default_model and before.saving_routing_usd == 0
    assert after.baseline_model == "big" and big.id is not None
    # Same speed (0.148 s alone), ten times the hourly price.
    naive_there, naive_here = (money(Decimal("0.148") * rate / 3600)
                               for rate in (Decimal("1.00"), Decimal("0.10")))
    assert after.naive_cost_usd == naive_there
    assert after.saving_routing_usd == naive_there - naive_here
    assert after.naive_cost_usd - after.cost_usd == parts(after)


def test_routing_and_the_cascade_land_in_the_routing_column_against_the_largest_tier(
    tmp_path: Path, database_url: str,
) -> None:
    """Tiers and no baseline named: the largest tier is the baseline. `auto` sends an easy
    question to the small tier (routing saves the gap); a cascade escalates (its first
    attempt's whole cost is a routing loss) and then answers on the large tier (no
    routing saving: it ran on the baseline)."""
    settings = make_settings(
        tmp_path, database_url, api_keys={"key-acme": "acme"},
        models={"tier-small": "unused/small", "tier-large": "unused/large"},
        default_model="tier-large", tiers=["tier-small", "tier-large"],
        prices={"tier-small": {"engine_hour_usd": "0.10"},
                "tier-large": {"engine_hour_usd": "1.00"}})
    assert settings.baseline_model == "tier-large"
    runtime = open_runtime(settings)
    reset_tables(runtime)
    try:
        with runtime.sessions() as session:
            for tier in settings.tiers:
                store_calibration(session, tier, SPEED)
        with TestClient(create_app(runtime)) as client:
            routed = client.post("/v1/jobs", headers=ACME, json={
                "model": "auto", "max_tokens": 16,
                "messages": [{"role": "user", "content": "What is the capital of Peru?"}]})
            cascaded = client.post("/v1/jobs", headers=ACME, json={
                "model": "cascade", "max_tokens": 16,
                "messages": [{"role": "user", "content": "Is a tomato a fruit?"}]})
        assert routed.status_code == cascaded.status_code == 202
        routed_id, cascade_id = (uuid.UUID(r.json()["id"]) for r in (routed, cascaded))

        def unsure(job_id: uuid.UUID) -> Generation:
            confidence = -3.0 if job_id == cascade_id else -0.01
            return Generation(key="", text="maybe", finish_reason="stop", prompt_tokens=40,
                              cached_tokens=0, output_tokens=6, mean_logprob=confidence,
                              min_logprob=confidence)

        costing = LedgerCosting(settings, runtime.sessions)
        for tier in settings.tiers:
            batch = claim_queued(runtime, tier)
            generations = [unsure(job.id) for job in batch.jobs]
            outcomes = judge_cascade(tier, outcomes_for(batch, generations, 0.3, settings),
                                     generations, settings)
            with runtime.sessions() as session:
                assert record_batch(session, batch, costing.cost(batch, outcomes), 0.3)
        ledger = rows(runtime)
        with runtime.sessions() as session:
            attempt_id = session.execute(text(
                "SELECT id FROM jobs WHERE cascade_of = :id"), {"id": cascade_id}).scalar_one()
    finally:
        runtime.close()
    by_job = {row.job_id: row for row in ledger}
    assert set(by_job) == {routed_id, cascade_id, attempt_id}
    for row in ledger:
        assert row.baseline_model == "tier-large"
        assert row.naive_cost_usd - row.cost_usd == parts(row)
    # Same measured speed on both tiers, a tenth of the hourly price: 0.148 s alone.
    on_large, on_small = (money(Decimal("0.148") * rate / 3600)
                          for rate in (Decimal("1.00"), Decimal("0.10")))
    auto_row = by_job[routed_id]
    assert auto_row.model == "tier-small"
    assert auto_row.naive_cost_usd == on_large
    assert auto_row.saving_routing_usd == on_large - on_small > 0
    attempt = by_job[attempt_id]
    assert attempt.model == "tier-small" and attempt.cost_usd > 0
    assert attempt.naive_cost_usd == 0
    assert attempt.saving_routing_usd == -attempt.cost_usd
    final = by_job[cascade_id]
    assert final.model == "tier-large" and final.naive_cost_usd == on_large
    assert final.saving_routing_usd == 0
    cascade_total = SavingsTotals.of_rows(
        [{c: getattr(r, c) for c in ("cost_usd", "naive_cost_usd", "unexplained_usd",
                                     *SAVING_COLUMNS)} for r in (attempt, final)])
    assert cascade_total.cost_usd == attempt.cost_usd + final.cost_usd
    assert cascade_total.savings["routing"] == -attempt.cost_usd


def test_a_failed_job_bills_what_ran_and_nothing_when_it_never_ran(
    keyed: tuple[Runtime, TestClient],
) -> None:
    """One batch of three: an answer, a job the engine worked on and then failed (billed
    its share, outcome `failed`), and one refused before the engine (context window: no
    row). A job cancelled before its batch ran bills nothing either."""
    runtime, client = keyed
    answered_job, broken, too_long = (uuid.UUID(post(client, q)["id"])
                                      for q in ("a", "b", "c"))
    script = {
        answered_job: Generation(key="", text="fine", finish_reason="stop", prompt_tokens=40,
                                 output_tokens=10),
        broken: Generation(key="", prompt_tokens=40, output_tokens=10, ran=True,
                           error_code="engine_error", error_message="grammar failed"),
        too_long: Generation(key="", prompt_tokens=4000, error_code="context_length_exceeded",
                             error_message="over the window"),
    }
    batch = claim_queued(runtime)
    outcomes = outcomes_for(batch, [script[job.id] for job in batch.jobs], 0.5,
                            runtime.settings)
    costed = LedgerCosting(runtime.settings, runtime.sessions).cost(batch, outcomes)
    with runtime.sessions() as session:
        assert record_batch(session, batch, costed, 0.5)
    with runtime.sessions() as session:
        assert not record_batch(session, batch, costed, 0.5)  # a second recording: refused
    by_job = {row.job_id: row for row in rows(runtime)}
    assert set(by_job) == {answered_job, broken}
    kept, failed = by_job[answered_job], by_job[broken]
    assert (kept.outcome, failed.outcome) == ("succeeded", "failed")
    # Both computed 50 tokens: the batch's engine time is theirs, half each.
    assert failed.engine_seconds == kept.engine_seconds == pytest.approx(0.25)
    assert failed.cost_usd == kept.cost_usd > 0
    assert (failed.input_tokens, failed.output_tokens) == (40, 10)
    assert failed.naive_cost_usd == failed.cost_usd and parts(failed) == 0
    statuses = {job: client.get(f"/v1/jobs/{job}", headers=ACME).json()["status"]
                for job in (answered_job, broken, too_long)}
    assert statuses == {answered_job: "succeeded", broken: "failed", too_long: "failed"}

    cancelled = uuid.UUID(post(client, "d")["id"])
    model = runtime.settings.default_model
    with runtime.sessions() as session:
        queued = claim_queued_jobs(session, model, 10, timedelta(0))
        [batch_id] = create_batches(session, [PlannedBatch(
            model=model, job_ids=tuple(r.job.id for r in queued), estimated_tokens=0)], [None])
        submission_id = session.execute(
            select(Job.submission_id).where(Job.id == cancelled)).scalar_one()
        assert cancel_batch(session, submission_id)
        session.commit()
    with runtime.sessions() as session:
        late = claim_batch(session, batch_id, "scripted-worker", 30)
    assert late is None or not late.jobs
    assert cancelled not in {row.job_id for row in rows(runtime)}
    assert client.get(f"/v1/jobs/{cancelled}", headers=ACME).json()["status"] == "cancelled"
