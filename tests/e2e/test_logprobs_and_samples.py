"""logprobs and n > 1 end to end: one OpenAI chat batch on the real engine where one line
asks for per-token logprobs with alternatives, one for three samples of its prompt, and
one for neither; each answers in OpenAI's shape and usage counts every sample. A line
offering tools to a model whose chat template takes none fails alone, naming the model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from api.app import create_app
from penny.runtime import Runtime
from tests.support import LiveServer, jsonl, openai_sdk, read_jsonl, wait_until
from workers.inprocess import InProcessPipeline
from workers.vllm_engine import VllmEngine

pytestmark = pytest.mark.engine

MODEL = "smollm2-135m-instruct"


def line(custom_id: str, **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "max_tokens": 8, "temperature": 0, **body,
                     "messages": [{"role": "user", "content": "Name a colour."}]}}


@pytest.fixture
def server(runtime: Runtime) -> Iterator[LiveServer]:
    with LiveServer(create_app(runtime)) as live:
        yield live


def test_logprobs_and_samples_answer_in_openai_shape(
    server: LiveServer, runtime: Runtime, engine: VllmEngine
) -> None:
    client = openai_sdk(server)
    lines = [line("logprobs", logprobs=True, top_logprobs=3),
             line("samples", n=3, temperature=1.0),
             line("plain"),
             line("tools", tools=[{"type": "function", "function": {"name": "paint"}}])]
    upload = client.files.create(file=("surface.jsonl", jsonl(lines)), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    with InProcessPipeline(runtime, [engine]):
        wait_until(lambda: client.batches.retrieve(batch.id).status in {
            "completed", "failed", "cancelled", "expired"}, timeout=600,
            what="the batch to end", interval=0.5)
    ended = client.batches.retrieve(batch.id)
    assert ended.status == "completed"
    outputs = {o["custom_id"]: o for o in read_jsonl(client, ended.output_file_id)}
    assert sorted(outputs) == ["logprobs", "plain", "samples"]
    (refused,) = read_jsonl(client, ended.error_file_id)
    assert refused["custom_id"] == "tools" and refused["response"]["status_code"] == 400
    error = refused["response"]["body"]["error"]
    assert error["code"] == "invalid_request"
    assert f"model {MODEL}'s chat template takes no tools" in error["message"]

    body = outputs["logprobs"]["response"]["body"]
    (choice,) = body["choices"]
    content = choice["logprobs"]["content"]
    assert len(content) == body["usage"]["completion_tokens"] > 0
    assert "".join(entry["token"] for entry in content) == choice["message"]["content"]
    for entry in content:
        assert entry["logprob"] <= 0 and entry["bytes"] == list(entry["token"].encode())
        top = entry["top_logprobs"]
        assert len(top) == 3
        assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top),
                                                      reverse=True)
        # Greedy: the token chosen is the most likely one.
        assert (top[0]["token"], top[0]["logprob"]) == (entry["token"], entry["logprob"])

    samples = outputs["samples"]
    choices = samples["response"]["body"]["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    assert all(c["message"]["content"] and c["logprobs"] is None for c in choices)
    used = samples["response"]["body"]["usage"]["completion_tokens"]
    # Three samples of at most 8 tokens each, all billed.
    assert len(choices) <= used <= 24
    assert samples["penny_cost"]["output_tokens"] == used

    plain = outputs["plain"]["response"]["body"]["choices"]
    assert len(plain) == 1 and plain[0]["logprobs"] is None
