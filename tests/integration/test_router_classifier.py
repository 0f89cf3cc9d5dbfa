"""The router's classifier against a real Postgres and the real embedder: trained on a
labelled set and stored versioned, consulted on the worker before a batch runs. A job it
sends to another tier goes back to the queue there without running or billing, is not
classified again, and is billed once where it runs. The engine is replaced by scripted
generations recorded through the worker's own code."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from api.app import create_app
from coalescer.planning import PlannedBatch
from models.queue import ClaimedBatch, claim_batch, claim_queued_jobs, create_batches, record_batch
from models.router_classifiers import latest_classifier, list_classifiers, store_classifier
from models.tables import Job, LedgerEntry
from penny.router_cli import training_of
from penny.runtime import Runtime, open_runtime
from penny.settings import Settings
from routing.calibration import parse_labelled
from tests.support import make_settings, reset_tables
from workers.embedder import Embedder
from workers.engine import Generation
from workers.execution import ExecutedBatch, outcomes_for
from workers.router_step import RouterStep

CAPITALS = ["France", "Japan", "Kenya", "Chile", "Norway", "Egypt", "Canada", "Poland"]
SUMS = [(12, 7), (30, 4), (8, 9), (51, 6), (22, 13), (40, 2), (17, 5), (3, 44)]


def _labelled() -> str:
    """Capitals: the small tier gets them wrong. Sums: it gets them right."""
    lines = [{"prompt": f"What is the capital of {c}?", "small_correct": False} for c in CAPITALS]
    lines += [{"prompt": f"What is {a} + {b}?", "small_correct": True} for a, b in SUMS]
    return "".join(json.dumps({**line, "mean_logprob": -0.2, "finish_reason": "stop",
                               "large_correct": True, "small_cost_usd": "1",
                               "large_cost_usd": "3"}) + "\n" for line in lines)


class ScriptedEngine:
    """Stands in for the engine: answers every job and remembers which it was given."""

    def __init__(self, model: str, settings: Settings) -> None:
        self.model, self.settings = model, settings
        self.seen: list[uuid.UUID] = []

    @property
    def model_name(self) -> str:
        return self.model

    def still_works(self) -> bool:
        return True

    def execute(self, batch: ClaimedBatch) -> ExecutedBatch:
        self.seen += [job.id for job in batch.jobs]
        generations = [Generation(key="", text="ok", finish_reason="stop", prompt_tokens=12,
                                  output_tokens=2) for _ in batch.jobs]
        return ExecutedBatch(outcomes_for(batch, generations, 0.1, self.settings), 0.1)


@pytest.fixture
def tiered(tmp_path: Path, database_url: str) -> Iterator[tuple[Runtime, TestClient]]:
    settings = make_settings(tmp_path, database_url,
                             models={"tier-small": "unused/s", "tier-large": "unused/l"},
                             default_model="tier-large", tiers=["tier-small", "tier-large"],
                             router_classifier=True)
    runtime = open_runtime(settings)
    reset_tables(runtime)
    try:
        with TestClient(create_app(runtime)) as client:
            yield runtime, client
    finally:
        runtime.close()


def _run(runtime: Runtime, model: str, embedder: Embedder) -> list[uuid.UUID]:
    """Plan the model's queued jobs into one batch and run it behind the router step;
    the ids the engine was given."""
    with runtime.sessions() as session:
        rows = claim_queued_jobs(session, model, 100, timedelta(0))
        [batch_id] = create_batches(session, [PlannedBatch(
            model=model, job_ids=tuple(r.job.id for r in rows), estimated_tokens=0)], [None])
        session.commit()
    with runtime.sessions() as session:
        batch = claim_batch(session, batch_id, "scripted-worker", 30)
    assert batch is not None
    engine = ScriptedEngine(model, runtime.settings)
    step = RouterStep(engine, embedder, runtime.sessions, runtime.settings)
    executed = step.execute(batch)
    with runtime.sessions() as session:
        assert record_batch(session, batch, executed.outcomes, executed.engine_seconds,
                            also=executed.record_with)
    return engine.seen


def _job(runtime: Runtime, job_id: uuid.UUID) -> Job:
    with runtime.sessions() as session:
        job = session.execute(select(Job).where(Job.id == job_id)).scalar_one()
        session.expunge(job)
    return job


def test_the_classifier_moves_jobs_between_tiers_once_and_bills_where_they_run(
    tiered: tuple[Runtime, TestClient], embedder: Embedder,
) -> None:
    runtime, client = tiered
    training = training_of(parse_labelled(_labelled()), embedder, target=1.0,
                           small_cost=1.0, large_cost=3.0)
    with runtime.sessions() as session:
        store_classifier(session, training.classifier, {"items": training.items})
        stored = latest_classifier(session)
    assert stored is not None and stored.version == 1 and stored.dimensions == 384

    def post(question: str) -> dict[str, Any]:
        answer = client.post("/v1/jobs", json={
            "model": "auto", "max_tokens": 8,
            "messages": [{"role": "user", "content": question}]})
        assert answer.status_code == 202, answer.text
        return dict(answer.json())

    capital = uuid.UUID(post("What is the capital of Peru?")["id"])  # features: easy
    sums = uuid.UUID(post("What is 61 + 18?")["id"])  # features: medium (math)
    assert (_job(runtime, capital).model, _job(runtime, sums).model) == (
        "tier-small", "tier-large")

    # The small tier's worker: the classifier doubts it on a capital; it never runs here.
    assert _run(runtime, "tier-small", embedder) == []
    moved = _job(runtime, capital)
    assert (moved.status, moved.model, moved.attempts) == ("queued", "tier-large", 0)
    assert moved.route is not None and moved.route["classifier"] == 1
    assert "; classifier p(small suffices)=" in moved.route["reason"]
    assert " < " in moved.route["reason"]

    # The large tier's worker: the capital runs (classified already); the sum goes down.
    assert _run(runtime, "tier-large", embedder) == [capital]
    assert _job(runtime, sums).model == "tier-small"
    assert _run(runtime, "tier-small", embedder) == [sums]

    with runtime.sessions() as session:
        ledger = {row.job_id: row for row in session.execute(select(LedgerEntry)).scalars()}
        listed = list_classifiers(session)
    assert set(ledger) == {capital, sums}
    assert (ledger[capital].model, ledger[sums].model) == ("tier-large", "tier-small")
    assert ledger[sums].route is not None and " >= " in ledger[sums].route
    assert _job(runtime, sums).route["reason"] == ledger[sums].route.removeprefix("auto: ")  # type: ignore[index]
    assert [c.version for c, _ in listed] == [1] and listed[0][1] == {"items": 16}


def test_train_router_refuses_a_set_without_prompts(tmp_path: Path) -> None:
    from penny.cli import app

    labelled = tmp_path / "labels.jsonl"
    labelled.write_text(json.dumps({"mean_logprob": -0.1, "finish_reason": "stop",
                                    "small_correct": True, "large_correct": True}) + "\n")
    refused = CliRunner().invoke(app, ["train-router", str(labelled), "--small-cost", "1",
                                       "--large-cost", "2"])
    assert refused.exit_code != 0 and "prompt" in refused.output
