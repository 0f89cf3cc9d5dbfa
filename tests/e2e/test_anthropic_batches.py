"""The official `anthropic` SDK against a real penny on the real engine: Message Batches
create, poll, results, list, cancel and delete."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

from api.app import create_app
from penny.runtime import Runtime, open_runtime
from tests.support import LiveServer, make_settings, wait_until
from workers.finalize import finalize_ready
from workers.inprocess import InProcessPipeline
from workers.vllm_engine import VllmEngine

pytestmark = pytest.mark.engine

MODEL = "smollm2-135m-instruct"
QUESTIONS = {"france": "What is the capital of France?", "two": "What is 2 + 2?",
             "japan": "What is the capital of Japan?"}


@pytest.fixture
def server(runtime: Runtime) -> Iterator[LiveServer]:
    with LiveServer(create_app(runtime)) as live:
        yield live


def sdk(server: LiveServer, key: str = "any") -> anthropic.Anthropic:
    client = anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0)
    server.clients.append(client)
    return client


def requests() -> list[dict[str, object]]:
    good = [{"custom_id": name, "params": {
        "model": MODEL, "max_tokens": 16, "system": "Answer in one short sentence.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": question}]}]}}
        for name, question in QUESTIONS.items()]
    bad = {"custom_id": "no-max-tokens", "params": {
        "model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}}
    return [*good, bad]


def test_message_batch_runs_and_matches_the_engine(
    server: LiveServer, runtime: Runtime, engine: VllmEngine
) -> None:
    from vllm import SamplingParams

    client = sdk(server)
    batch = client.messages.batches.create(requests=requests())  # type: ignore[arg-type]
    assert batch.processing_status == "in_progress" and batch.type == "message_batch"
    assert batch.request_counts.processing == 3 and batch.request_counts.errored == 1
    assert batch.results_url is None

    with InProcessPipeline(runtime, [engine]):
        wait_until(lambda: client.messages.batches.retrieve(batch.id).processing_status
                   == "ended", timeout=300, what="the message batch to end", interval=0.3)
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.ended_at is not None and ended.results_url is not None
    counts = ended.request_counts
    assert (counts.processing, counts.succeeded, counts.errored) == (0, 3, 1)

    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert sorted(results) == sorted([*QUESTIONS, "no-max-tokens"])
    errored = results["no-max-tokens"]
    assert errored.type == "errored"
    assert errored.error.error.type == "invalid_request_error"
    assert "max_tokens" in errored.error.error.message

    engine.llm.reset_prefix_cache()
    direct = engine.llm.chat(
        [[{"role": "system", "content": "Answer in one short sentence."},
          {"role": "user", "content": q}] for q in QUESTIONS.values()],
        [SamplingParams(temperature=0, max_tokens=16)] * len(QUESTIONS), use_tqdm=False)
    for name, expected in zip(QUESTIONS, direct, strict=True):
        result = results[name]
        assert result.type == "succeeded"
        message = result.message
        assert message.role == "assistant" and message.model == MODEL
        block = message.content[0]
        assert block.type == "text" and block.text == expected.outputs[0].text
        assert message.stop_reason in ("end_turn", "max_tokens")
        assert message.usage.output_tokens == len(expected.outputs[0].token_ids)
        assert (message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)
                == len(expected.prompt_token_ids))

    listed = client.messages.batches.list(limit=10)
    assert [b.id for b in listed.data] == [batch.id]
    assert client.messages.batches.delete(batch.id).type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(batch.id)


def test_cancel_list_and_keys(tmp_path: Path, database_url: str) -> None:
    """No engine needed: batches cancelled before anything runs. The Anthropic SDK sends its
    key in x-api-key, and each key sees only its own tenant's batches."""
    runtime = open_runtime(make_settings(tmp_path, database_url,
                                         api_keys={"key-a": "acme", "key-b": "bolt"}))
    try:
        with LiveServer(create_app(runtime)) as server:
            client = sdk(server, "key-a")
            with pytest.raises(anthropic.AuthenticationError) as refused:
                sdk(server, "wrong").messages.batches.list()
            assert isinstance(refused.value.body, dict)
            assert refused.value.body["error"]["type"] == "authentication_error"
            ids = [client.messages.batches.create(requests=requests()[:1]).id  # type: ignore[arg-type]
                   for _ in range(3)]
            assert [b.id for b in client.messages.batches.list(limit=2)] == list(reversed(ids))
            assert list(sdk(server, "key-b").messages.batches.list()) == []
            with pytest.raises(anthropic.UnprocessableEntityError):
                client.messages.batches.create(requests=[  # type: ignore[arg-type]
                    {"custom_id": "same", "params": {}}, {"custom_id": "same", "params": {}}])

            canceling = client.messages.batches.cancel(ids[0])
            assert canceling.processing_status == "canceling"
            assert canceling.cancel_initiated_at is not None
            with pytest.raises(anthropic.ConflictError):
                client.messages.batches.delete(ids[0])  # not ended yet
            finalize_ready(runtime.sessions, runtime.store)
            ended = client.messages.batches.retrieve(ids[0])
            assert ended.processing_status == "ended" and ended.request_counts.canceled == 1
            results = list(client.messages.batches.results(ids[0]))
            assert [(r.custom_id, r.result.type) for r in results] == [("france", "canceled")]
    finally:
        runtime.close()
