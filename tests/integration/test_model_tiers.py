"""Model tiers at intake, over HTTP against a real Postgres: `auto` picks a tier and says
why, a named model is never overridden, `cascade` starts on the cheapest tier with
logprobs on, and /v1/models describes every tier."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from coalescer.planning import PlannedBatch
from models.queue import claim_batch, claim_queued_jobs, create_batches, record_batch
from models.tables import Job
from penny.runtime import Runtime, open_runtime
from penny.settings import Settings
from tests.support import make_settings, reset_tables
from workers.cascade import judge_cascade
from workers.engine import Generation
from workers.execution import outcomes_for

TIERS = {"tier-small": "unused/small", "tier-large": "unused/large"}


@pytest.fixture
def tiered_settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(
        tmp_path, database_url, models=TIERS, default_model="tier-large",
        tiers=["tier-small", "tier-large"],
        model_descriptions={"tier-small": "a pruned copy, cheaper and worse"},
        model_engines={"tier-small": {"dtype": "float32", "max_num_seqs": 64}},
        tag_routes={"feature=faq": "cascade", "feature=codegen": "tier-large",
                    "feature=triage": "auto"},
        cascade_verifiers={"feature=extract": {"kind": "json"}})


@pytest.fixture
def client(tiered_settings: Settings) -> Iterator[TestClient]:
    runtime = open_runtime(tiered_settings)
    reset_tables(runtime)
    with TestClient(create_app(runtime)) as client:
        yield client
    runtime.close()


def _chat(content: str, **fields: object) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 16, **fields}


def _job(client: TestClient, body: dict[str, object]) -> dict[str, object]:
    accepted = client.post("/v1/jobs", json=body)
    assert accepted.status_code == 202, accepted.text
    job = client.get(f"/v1/jobs/{accepted.json()['id']}").json()
    assert isinstance(job, dict)
    return job


def test_auto_routes_by_cheap_features_and_records_why(client: TestClient) -> None:
    easy = _job(client, _chat("What is the capital of Peru?", model="auto"))
    assert easy["model"] == "tier-small"
    assert easy["route"] == {"mode": "auto", "tier": "tier-small",
                             "reason": "easy: lookup question", "difficulty": "easy"}
    hard = _job(client, _chat("Write a python function that sorts a list.", model="auto"))
    assert hard["model"] == "tier-large"
    assert hard["route"]["reason"] == "hard: code markers"  # type: ignore[index]


def test_a_named_model_is_never_overridden(client: TestClient) -> None:
    job = _job(client, _chat("What is the capital of Peru?", model="tier-large"))
    assert job["model"] == "tier-large"
    assert job["route"] is None


def test_cascade_starts_cheapest_with_logprobs_and_alone(client: TestClient) -> None:
    job = _job(client, _chat("Write a python function that sorts a list.", model="cascade"))
    assert job["model"] == "tier-small"
    assert job["route"]["mode"] == "cascade"  # type: ignore[index]
    with client.app.state.sessions() as session:
        row = session.execute(select(Job).where(Job.id == job["id"])).scalar_one()
    assert row.request["sampling"]["logprobs"] is True
    assert (row.cache_mode, row.single_flight_key) == ("off", None)


def test_models_lists_tiers_labels_engines_and_routed_names(client: TestClient) -> None:
    data = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert data["tier-small"]["penny_tier"] == 0
    assert data["tier-small"]["penny_description"] == "a pruned copy, cheaper and worse"
    assert data["tier-small"]["penny_engine"] == {"dtype": "float32", "max_num_seqs": 64}
    assert data["tier-large"]["penny_tier"] == 1
    assert data["auto"]["penny_kind"] == data["cascade"]["penny_kind"] == "router"


def test_routed_names_without_tiers_are_a_precise_404(runtime: Runtime) -> None:
    with TestClient(create_app(runtime)) as client:
        answer = client.post("/v1/jobs", json=_chat("hi", model="auto"))
        names = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert answer.status_code == 404
    assert answer.json()["error"]["param"] == "model"
    assert "PENNY_TIERS" in answer.json()["error"]["message"]
    assert "auto" not in names and "cascade" not in names


def test_a_tag_policy_routes_jobs_that_name_no_model_and_says_so(client: TestClient) -> None:
    faq = _job(client, _chat("Write a python function that sorts a list.",
                             metadata={"feature": "faq"}))
    assert faq["model"] == "tier-small"
    assert faq["route"] == {"mode": "cascade", "tier": "tier-small", "attempts": [],
                            "policy": "feature=faq",
                            "reason": "tag feature=faq: a cascade starts on the cheapest tier"}
    code = _job(client, _chat("What is the capital of Peru?",
                              metadata={"feature": "codegen"}))
    assert code["model"] == "tier-large"
    assert code["route"] == {"mode": "policy", "tier": "tier-large",
                             "policy": "feature=codegen",
                             "reason": "tag feature=codegen names it"}
    triage = _job(client, _chat("What is the capital of Peru?",
                                metadata={"feature": "triage"}))
    assert triage["model"] == "tier-small"
    assert triage["route"]["reason"] == "tag feature=triage: easy: lookup question"  # type: ignore[index]
    # A named model is never rerouted, and a job without a matching tag takes the default.
    named = _job(client, _chat("hi", model="tier-small", metadata={"feature": "codegen"}))
    untagged = _job(client, _chat("hi", metadata={"feature": "other"}))
    assert (named["model"], named["route"]) == ("tier-small", None)
    assert (untagged["model"], untagged["route"]) == ("tier-large", None)


def test_a_cascade_verifier_escalates_a_confident_answer_that_fails_it(
    client: TestClient, tiered_settings: Settings,
) -> None:
    """The job's tags reach the worker with its batch; the verifier of its tag sends a
    confident non-JSON answer on to the next tier, through the ordinary queue."""
    job = _job(client, _chat("Give the name as JSON: Ada Lovelace.", model="cascade",
                             metadata={"feature": "extract"}))
    sessions = client.app.state.sessions
    with sessions() as session:
        rows = claim_queued_jobs(session, "tier-small", 10, timedelta(0))
        [batch_id] = create_batches(session, [PlannedBatch(
            model="tier-small", job_ids=tuple(r.job.id for r in rows), estimated_tokens=0)],
            [None])
        session.commit()
    with sessions() as session:
        batch = claim_batch(session, batch_id, "scripted-worker", 30)
    assert batch is not None and batch.jobs[0].tags == {"feature": "extract"}
    generations = [Generation(key="", text="The name is Ada Lovelace.", finish_reason="stop",
                              prompt_tokens=20, output_tokens=7, mean_logprob=-0.01,
                              min_logprob=-0.05)]
    outcomes = judge_cascade("tier-small", outcomes_for(batch, generations, 0.2,
                                                        tiered_settings),
                             generations, tiered_settings)
    with sessions() as session:
        assert record_batch(session, batch, outcomes, 0.2)
    after = client.get(f"/v1/jobs/{job['id']}").json()
    assert (after["status"], after["model"]) == ("queued", "tier-large")
    assert after["route"]["reason"].startswith(
        "escalated from tier-small: verifier feature=extract: the answer is not JSON")
