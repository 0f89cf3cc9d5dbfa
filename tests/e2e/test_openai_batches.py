"""The official `openai` SDK against a real penny (uvicorn on loopback, Postgres, the real
vLLM engine in the in-process pipeline): upload, create, poll, download output and error
files, and compare the answers with the engine's own."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest
from sqlalchemy import func, select

from api.app import create_app
from intake.schema import JobRequest
from models.tables import Batch, LedgerEntry
from penny.runtime import Runtime
from tests.support import REPO, LiveServer, jsonl, openai_sdk, read_jsonl, wait_until
from workers.engine import GenerationRequest
from workers.inprocess import InProcessPipeline
from workers.vllm_engine import VllmEngine

pytestmark = pytest.mark.engine

MODEL = "smollm2-135m-instruct"
# Long enough to fill whole prefix-cache blocks, so every line after the first reuses it.
SYSTEM = ("You are a careful assistant for a geography quiz. Answer with one short sentence "
          "and name the place directly. Do not repeat the question and do not add advice. "
          "If you do not know, say you do not know. Keep to plain English. ") * 6
COUNTRIES = ("France", "Japan", "Italy", "Spain", "Kenya", "Chile", "Peru", "Egypt")


def chat_lines() -> list[dict[str, Any]]:
    return [
        {"custom_id": f"capital-{country.lower()}", "method": "POST",
         "url": "/v1/chat/completions",
         "body": {"model": MODEL, "max_tokens": 16, "temperature": 0, "messages": [
             {"role": "system", "content": SYSTEM},
             {"role": "user", "content": f"What is the capital of {country}?"}]}}
        for country in COUNTRIES
    ]


def poll_until_ended(client: openai.OpenAI, batch_id: str, seen: list[str]) -> Any:
    ended = {"completed", "failed", "cancelled", "expired"}

    def done() -> bool:
        status = client.batches.retrieve(batch_id).status
        if not seen or seen[-1] != status:
            seen.append(status)
        return status in ended

    wait_until(done, timeout=300, what=f"batch {batch_id} to end", interval=0.3)
    return client.batches.retrieve(batch_id)


@pytest.fixture
def server(runtime: Runtime) -> Iterator[LiveServer]:
    with LiveServer(create_app(runtime)) as live:
        yield live


def test_chat_batch_through_the_sdk_matches_the_engine(
    server: LiveServer, runtime: Runtime, engine: VllmEngine
) -> None:
    """The batch is created before the pipeline starts, so its lines form one engine batch
    in line order; the direct call then runs that very batch (vLLM's greedy output on CPU
    is not batch-invariant, so a differently composed batch would test the kernels)."""
    from vllm import SamplingParams

    client = openai_sdk(server)
    lines = chat_lines()
    too_long = {"custom_id": "too-long", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": MODEL, "max_tokens": 8,
                         "messages": [{"role": "user", "content": "word " * 2500}]}}
    # The prompt fits the 2048-token context alone, its answer allowance does not: refused
    # too, not run and silently cut short at the window's end.
    no_room = {"custom_id": "no-room", "method": "POST", "url": "/v1/chat/completions",
               "body": {"model": MODEL, "max_tokens": 300,
                        "messages": [{"role": "user", "content": "word " * 1900}]}}
    upload = client.files.create(file=("quiz.jsonl", jsonl([*lines, too_long, no_room])),
                                 purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"team": "geo"})
    # The request parses nothing: the coalescer validates the file once the pipeline runs.
    assert batch.status == "validating" and batch.in_progress_at is None
    assert batch.request_counts is not None and batch.request_counts.total == 0

    seen: list[str] = []
    with InProcessPipeline(runtime, [engine]):
        ended = poll_until_ended(client, batch.id, seen)
    assert ended.status == "completed", seen
    lifecycle = ["validating", "in_progress", "finalizing", "completed"]
    assert seen == [status for status in lifecycle if status in seen], seen
    assert ended.in_progress_at is not None and ended.request_counts is not None
    assert ended.request_counts.total == 10
    assert ended.completed_at is not None and ended.metadata == {"team": "geo"}
    assert ended.model == MODEL
    assert ended.request_counts is not None
    assert (ended.request_counts.completed, ended.request_counts.failed) == (8, 2)

    outputs = read_jsonl(client, ended.output_file_id)
    errors = read_jsonl(client, ended.error_file_id)
    answered = [line["custom_id"] for line in outputs + errors]
    assert sorted(answered) == sorted(line["custom_id"] for line in
                                      [*lines, too_long, no_room])
    assert [e["custom_id"] for e in errors] == ["too-long", "no-room"]
    for error in errors:
        assert error["response"]["status_code"] == 400
        assert error["response"]["body"]["error"]["code"] == "context_length_exceeded"
    message = errors[1]["response"]["body"]["error"]["message"]
    prompt_tokens = len(engine.prompt_token_ids(GenerationRequest.from_stored(
        "no-room", JobRequest.model_validate(no_room["body"]).engine_request(), "")))
    assert prompt_tokens + 300 > 2048 > prompt_tokens
    assert f"the prompt has {prompt_tokens} tokens and max_tokens is 300" in message
    assert "context window of 2048" in message

    with runtime.sessions() as session:
        assert session.execute(select(func.count()).select_from(Batch)).scalar_one() == 1
    engine.llm.reset_prefix_cache()
    direct = engine.llm.chat([line["body"]["messages"] for line in lines],
                             [SamplingParams(temperature=0, max_tokens=16)] * len(lines),
                             use_tqdm=False)
    by_id = {line["custom_id"]: line for line in outputs}
    for line, expected in zip(lines, direct, strict=True):
        out = by_id[line["custom_id"]]
        assert out["error"] is None and out["id"].startswith("batch_req_")
        response = out["response"]
        assert response["status_code"] == 200
        completion = openai.types.chat.ChatCompletion.model_validate(response["body"])
        assert completion.object == "chat.completion" and completion.model == MODEL
        assert completion.choices[0].message.content == expected.outputs[0].text
        assert completion.usage is not None
        assert completion.usage.completion_tokens == len(expected.outputs[0].token_ids)
        assert completion.usage.prompt_tokens == len(expected.prompt_token_ids)
        assert completion.usage.prompt_tokens_details is not None
        assert out["penny_cost"]["output_tokens"] == completion.usage.completion_tokens
        assert Decimal(out["penny_cost"]["cost_usd"]) > 0
    cached = [by_id[line["custom_id"]]["response"]["body"]["usage"]["prompt_tokens_details"]
              ["cached_tokens"] for line in lines]
    assert sum(1 for c in cached if c > 0) >= len(lines) - 1, cached  # the shared system prompt

    assert ended.usage is not None
    assert ended.usage.output_tokens == sum(
        o["response"]["body"]["usage"]["completion_tokens"] for o in outputs)
    assert ended.usage.input_tokens_details.cached_tokens == sum(cached)
    extra = ended.model_extra or {}
    assert extra["penny_cost"]["output_tokens"] == ended.usage.output_tokens
    assert Decimal(extra["penny_cost"]["cost_usd"]) == sum(
        Decimal(o["penny_cost"]["cost_usd"]) for o in outputs)
    output_file = client.files.retrieve(ended.output_file_id or "")
    assert output_file.purpose == "batch_output"


def test_completions_batch(server: LiveServer, runtime: Runtime, engine: VllmEngine) -> None:
    client = openai_sdk(server)
    lines = [{"custom_id": f"count-{i}", "method": "POST", "url": "/v1/completions",
              "body": {"model": MODEL, "prompt": f"Counting: {i}, {i + 1}, {i + 2},",
                       "max_tokens": 8, "temperature": 0}} for i in range(3)]
    upload = client.files.create(file=("count.jsonl", jsonl(lines)), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/completions",
                                  completion_window="1h")
    with InProcessPipeline(runtime, [engine]):
        ended = poll_until_ended(client, batch.id, [])
    assert ended.status == "completed"
    assert ended.error_file_id is None
    outputs = read_jsonl(client, ended.output_file_id)
    assert [o["custom_id"] for o in outputs] == ["count-0", "count-1", "count-2"]
    for out in outputs:
        completion = openai.types.Completion.model_validate(out["response"]["body"])
        assert completion.object == "text_completion"
        assert completion.choices[0].text
        assert completion.choices[0].finish_reason in ("stop", "length")
        assert completion.usage is not None and completion.usage.completion_tokens <= 8


def test_vllm_run_batch_file_runs_unchanged(
    server: LiveServer, runtime: Runtime, engine: VllmEngine
) -> None:
    """examples/openai_batch.jsonl is in vLLM's run_batch input format (its documented
    example, pointed at the model penny serves)."""
    client = openai_sdk(server)
    example = REPO / "examples" / "openai_batch.jsonl"
    with example.open("rb") as handle:
        upload = client.files.create(file=handle, purpose="batch")
    assert client.files.content(upload.id).read() == example.read_bytes()
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    with InProcessPipeline(runtime, [engine]):
        ended = poll_until_ended(client, batch.id, [])
    assert ended.status == "completed", ended.errors
    outputs = read_jsonl(client, ended.output_file_id)
    assert [o["custom_id"] for o in outputs] == ["request-1", "request-2", "request-3"]
    assert all(o["response"]["body"]["choices"][0]["message"]["content"] for o in outputs)
    assert "Paris" in outputs[2]["response"]["body"]["choices"][0]["message"]["content"]
    with runtime.sessions() as session:
        billed = session.execute(select(func.count()).select_from(LedgerEntry)).scalar_one()
    assert billed == 3
