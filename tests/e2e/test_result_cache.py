"""The exact result cache on the real engine: a repeat in a later submission is answered
without the engine and equals the first answer, per tenant; sampled and failed jobs run
again; OpenAI batch lines served from the cache keep the hosted format."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from api.app import create_app
from models.tables import Batch, ResultCacheEntry
from penny.runtime import Runtime, open_runtime
from tests.support import (
    LiveServer,
    jsonl,
    make_settings,
    openai_sdk,
    read_jsonl,
    reset_tables,
    wait_until,
)
from workers.inprocess import InProcessPipeline
from workers.vllm_engine import VllmEngine

pytestmark = pytest.mark.engine

ACME = {"Authorization": "Bearer key-acme"}
GLOBEX = {"Authorization": "Bearer key-globex"}
GREEDY = {"messages": [{"role": "user", "content": "Name the largest ocean on Earth."}],
          "max_tokens": 12}
SAMPLED = {**GREEDY, "temperature": 1.0}
# Longer than the model's 2048-token context: the engine fails it.
TOO_LONG = {"prompt": "word " * 2100, "max_tokens": 4}


@pytest.fixture
def live(tmp_path: Path, database_url: str, engine: VllmEngine
         ) -> Iterator[tuple[Runtime, httpx.Client]]:
    settings = make_settings(tmp_path, database_url,
                             api_keys={"key-acme": "acme", "key-globex": "globex"})
    runtime = open_runtime(settings)
    reset_tables(runtime)
    try:
        with InProcessPipeline(runtime, [engine]), LiveServer(create_app(runtime)) as server, \
                httpx.Client(base_url=server.url, timeout=30) as client:
            yield runtime, client
    finally:
        runtime.close()


def run(client: httpx.Client, body: dict[str, Any], headers: dict[str, str]
        ) -> tuple[str, dict[str, Any]]:
    """Post a job; return the status the POST answered with and the finished job."""
    accepted = client.post("/v1/jobs", json=body, headers=headers)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]

    def ended() -> bool:
        status = client.get(f"/v1/jobs/{job_id}", headers=headers).json()["status"]
        return status in ("succeeded", "failed")

    wait_until(ended, timeout=180, what=f"job {job_id}", interval=0.2)
    return accepted.json()["status"], dict(client.get(f"/v1/jobs/{job_id}",
                                                      headers=headers).json())


def engine_runs(runtime: Runtime) -> tuple[int, float]:
    """Jobs the engine ran and the engine seconds it spent, over all batches."""
    with runtime.sessions() as session:
        jobs, seconds = session.execute(
            select(func.coalesce(func.sum(Batch.job_count), 0),
                   func.coalesce(func.sum(Batch.engine_seconds), 0.0))).one()
    return int(jobs), float(seconds)


def test_a_repeat_is_answered_without_the_engine_and_equals_the_first_answer(
    live: tuple[Runtime, httpx.Client],
) -> None:
    runtime, client = live
    status, first = run(client, GREEDY, ACME)
    assert status == "queued" and first["cost"]["served_by"] == "engine"
    assert first["result"]["text"].strip()
    ran = engine_runs(runtime)
    assert ran[0] == 1 and ran[1] > 0

    status, again = run(client, GREEDY, ACME)
    assert status == "succeeded"  # the POST itself answered
    assert engine_runs(runtime) == ran  # no batch row, no engine second
    assert again["result"] == first["result"] and again["usage"] == first["usage"]
    assert again["cost"]["served_by"] == "exact_cache"
    assert again["cost"]["source_job_id"] == first["id"]
    assert Decimal(again["cost"]["usd"]) == 0 and again["cost"]["engine_seconds"] == 0
    assert Decimal(again["cost"]["cache_saved_usd"]) == Decimal(first["cost"]["usd"]) > 0

    # Another tenant asking the very same thing runs it on the engine; its own repeat hits.
    status, theirs = run(client, GREEDY, GLOBEX)
    assert status == "queued" and theirs["cost"]["served_by"] == "engine"
    assert engine_runs(runtime)[0] == 2
    status, theirs_again = run(client, GREEDY, GLOBEX)
    assert status == "succeeded" and theirs_again["cost"]["source_job_id"] == theirs["id"]

    # Sampled without a seed: every request is its own draw, so it runs every time.
    for _ in range(2):
        status, sampled = run(client, SAMPLED, ACME)
        assert status == "queued" and sampled["cost"]["served_by"] == "engine"
    # A failed job is never cached: the repeat runs (and fails) again.
    for _ in range(2):
        status, failed = run(client, TOO_LONG, ACME)
        assert status == "queued" and failed["status"] == "failed"
        assert failed["error"]["code"] == "context_length_exceeded"
    assert engine_runs(runtime)[0] == 6
    with runtime.sessions() as session:
        assert session.execute(select(func.count()).select_from(ResultCacheEntry)
                               ).scalar_one() == 2  # acme's and globex's greedy answers


def chat_line(custom_id: str, question: str, **extra: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "smollm2-135m-instruct", "max_tokens": 12, "temperature": 0,
                     "messages": [{"role": "user", "content": question}], **extra}}


def test_openai_batch_lines_served_from_the_cache_keep_the_hosted_format(
    runtime: Runtime, engine: VllmEngine
) -> None:
    with InProcessPipeline(runtime, [engine]), LiveServer(create_app(runtime)) as server:
        client = openai_sdk(server)

        def batch_of(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
            upload = client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
            batch = client.batches.create(input_file_id=upload.id,
                                          endpoint="/v1/chat/completions",
                                          completion_window="24h")
            wait_until(lambda: client.batches.retrieve(batch.id).status == "completed",
                       timeout=300, what="the batch to complete", interval=0.3)
            ended = client.batches.retrieve(batch.id)
            assert read_jsonl(client, ended.error_file_id) == []
            return {line["custom_id"]: line for line in read_jsonl(client,
                                                                   ended.output_file_id)}

        first = batch_of([chat_line("sea", "Name a sea."),
                          chat_line("hill", "Name a hill.")])
        ran = engine_runs(runtime)[0]
        second = batch_of([chat_line("sea", "Name a sea."), chat_line("hill", "Name a hill."),
                           chat_line("lake", "Name a lake."),
                           chat_line("sea-fresh", "Name a sea.", penny_cache="off")])

    assert engine_runs(runtime)[0] == ran + 2  # only "lake" and the opted-out line ran
    for custom_id in ("sea", "hill"):
        before, after = first[custom_id], second[custom_id]
        body, cached = before["response"]["body"], after["response"]["body"]
        assert after["response"]["status_code"] == 200
        assert cached["object"] == "chat.completion"
        assert cached["choices"] == body["choices"]
        assert cached["usage"] == body["usage"]  # the tokens as the line would have used
        assert set(cached) == set(body)
        cost = after["penny_cost"]
        assert cost["served_by"] == "exact_cache"
        assert Decimal(cost["cost_usd"]) == 0 and cost["engine_seconds"] == 0
        assert cost["source_job_id"].replace("-", "") == before["id"].removeprefix(
            "batch_req_")
        assert Decimal(cost["cache_saved_usd"]) == Decimal(before["penny_cost"]["cost_usd"])
        assert cost["exact_cache_jobs"] == 1
    assert second["lake"]["penny_cost"]["served_by"] == "engine"
    assert second["sea-fresh"]["penny_cost"]["served_by"] == "engine"
