"""Each chat model's own context window at intake, through every way in (native job, bulk,
CSV upload, OpenAI batch line, Anthropic batch request, `auto` and `cascade`): a
`max_tokens` that cannot fit the window of the model the job would run on is refused naming
that model and its window, while the same value on a model with a larger window goes in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from coalescer.runner import Coalescer
from models.tables import Job
from penny.runtime import Runtime, open_runtime
from tests.support import jsonl, make_settings, reset_tables
from workers.inprocess import LocalDispatcher

WIDE, NARROW = "wide", "narrow"
NARROW_CONTEXT = 128
TOO_LONG = NARROW_CONTEXT  # leaves no room for the prompt in the narrow window
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    # Neither model is loaded: intake only reads the settings.
    settings = make_settings(
        tmp_path, database_url,
        models={WIDE: "offline:smollm2", NARROW: "offline:smollm2"}, default_model=WIDE,
        engine_max_model_len=2048, tiers=[WIDE, NARROW],
        model_engines={NARROW: {"max_model_len": NARROW_CONTEXT}})
    runtime = open_runtime(settings)
    reset_tables(runtime)
    yield runtime
    runtime.close()


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime)) as client:
        yield client


def job(model: str, max_tokens: int = TOO_LONG) -> dict[str, Any]:
    return {"model": model, "messages": QUESTION, "max_tokens": max_tokens}


def queued_jobs(runtime: Runtime) -> list[tuple[str, int]]:
    with runtime.sessions() as session:
        found = session.execute(select(Job.model, func.count()).group_by(Job.model))
        return sorted((model, count) for model, count in found)


def says_narrow_window(error: dict[str, Any]) -> bool:
    return (f"model {NARROW}'s context window of {NARROW_CONTEXT} tokens" in error["message"]
            and f"at most {NARROW_CONTEXT - 1}" in error["message"])


def test_native_jobs_use_the_window_of_their_own_model(
    client: TestClient, runtime: Runtime
) -> None:
    refused = client.post("/v1/jobs", json=job(NARROW))
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["param"] == "max_tokens"
    assert says_narrow_window(refused.json()["error"])
    assert client.post("/v1/jobs", json=job(NARROW, NARROW_CONTEXT - 1)).status_code == 202
    assert client.post("/v1/jobs", json=job(WIDE)).status_code == 202
    assert queued_jobs(runtime) == [(NARROW, 1), (WIDE, 1)]


def test_a_bulk_422_names_each_job_over_its_models_window(
    client: TestClient, runtime: Runtime
) -> None:
    response = client.post("/v1/jobs/bulk", json={"jobs": [
        job(WIDE), job(NARROW), job(NARROW, 8), job(NARROW, 4000 // 2)]})
    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    assert [detail["index"] for detail in details] == [1, 3]
    assert queued_jobs(runtime) == []


def test_a_cascade_must_fit_every_tier_it_may_climb_to(
    client: TestClient, runtime: Runtime
) -> None:
    # The cascade starts on the wide tier but may climb to the narrow one.
    refused = client.post("/v1/jobs", json=job("cascade"))
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert says_narrow_window(error) and "a cascade may climb to it" in error["message"]
    assert client.post("/v1/jobs", json=job("cascade", 16)).status_code == 202
    assert queued_jobs(runtime) == [(WIDE, 1)]


def test_auto_uses_the_window_of_the_tier_it_routes_to(
    client: TestClient, runtime: Runtime
) -> None:
    # Code markers make the request hard: auto routes it to the last (narrow) tier.
    hard = {"model": "auto", "max_tokens": TOO_LONG,
            "messages": [{"role": "user", "content": "Fix this:\n```def f(: pass```"}]}
    refused = client.post("/v1/jobs", json=hard)
    assert refused.status_code == 422, refused.text
    assert says_narrow_window(refused.json()["error"])
    # An easy lookup goes to the wide tier, whose window holds the same max_tokens.
    assert client.post("/v1/jobs", json=job("auto")).status_code == 202
    assert queued_jobs(runtime) == [(WIDE, 1)]


def test_csv_rows_use_the_window_of_their_model_column(
    client: TestClient, runtime: Runtime
) -> None:
    rows = (f"custom_id,prompt,model,max_tokens\n"
            f"a,Name a colour.,{WIDE},{TOO_LONG}\n"
            f"b,Name a colour.,{NARROW},{TOO_LONG}\n").encode()
    response = client.post("/v1/uploads/csv", files={"file": ("in.csv", rows, "text/csv")})
    assert response.status_code == 422, response.text
    assert NARROW in response.text and f"{NARROW_CONTEXT} tokens" in response.text
    assert queued_jobs(runtime) == []


def test_anthropic_requests_use_the_window_of_their_model(
    client: TestClient, runtime: Runtime
) -> None:
    def request(custom_id: str, model: str) -> dict[str, Any]:
        return {"custom_id": custom_id, "params": job(model)}

    # As the hosted API does, a bad request errors alone and its batch-mates run.
    response = client.post("/v1/messages/batches", json={
        "requests": [request("a", WIDE), request("b", NARROW)]})
    assert response.status_code == 200, response.text
    assert response.json()["request_counts"] == {
        "processing": 1, "succeeded": 0, "errored": 1, "canceled": 0, "expired": 0}
    with runtime.sessions() as session:
        found = session.execute(select(Job.custom_id, Job.status, Job.error)
                                .order_by(Job.custom_id)).all()
    assert [(custom_id, status) for custom_id, status, _ in found] == [
        ("a", "queued"), ("b", "failed")]
    assert says_narrow_window(found[1].error)


def test_openai_batch_lines_use_the_window_of_their_model(
    client: TestClient, runtime: Runtime
) -> None:
    def line(custom_id: str, model: str) -> dict[str, Any]:
        return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                "body": job(model)}

    upload = client.post("/v1/files", data={"purpose": "batch"},
                         files={"file": ("in.jsonl", jsonl([line("a", WIDE),
                                                             line("b", NARROW)]))})
    created = client.post("/v1/batches", json={
        "input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions",
        "completion_window": "24h"})
    assert created.status_code == 200, created.text
    coalescer = Coalescer(runtime.settings, runtime.sessions,
                          LocalDispatcher([WIDE, NARROW]), runtime.store, [WIDE, NARROW])
    assert coalescer.validate()
    batch = client.get(f"/v1/batches/{created.json()['id']}").json()
    assert batch["status"] == "failed", json.dumps(batch)
    errors = batch["errors"]["data"]
    assert [(e["line"], e["param"]) for e in errors] == [(2, "body.max_tokens")]
    assert says_narrow_window(errors[0])
    assert queued_jobs(runtime) == []
