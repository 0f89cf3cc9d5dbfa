"""Embeddings batches through the official `openai` SDK against a real penny (uvicorn on
loopback, Postgres, the real sentence-transformers embedder): upload, create, poll,
download, and compare every vector with `SentenceTransformer.encode`. In the embedded
pipeline and through Redis to a separate `penny worker` process, neither of which loads
vLLM; and once next to the vLLM engine, as `penny up` runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from openai.lib._parsing._embeddings import parse_embedding_response
from sqlalchemy import select

from api.app import create_app
from coalescer.runner import Coalescer
from models.tables import LedgerEntry
from penny.runtime import Runtime, open_runtime
from penny.settings import OFFLINE_EMBEDDING_MODEL_NAME
from tests.support import (
    REPO,
    LiveServer,
    jsonl,
    make_settings,
    openai_sdk,
    read_jsonl,
    reset_tables,
    wait_until,
)
from workers.celery_app import CeleryDispatcher, make_celery
from workers.inprocess import InProcessPipeline
from workers.sentence_embedder import SentenceTransformerEmbedder

MODEL = OFFLINE_EMBEDDING_MODEL_NAME
ENDED = {"completed", "failed", "cancelled", "expired"}
# The hosted text-embedding-3-small list price, per token.
LIST_USD_PER_TOKEN = Decimal("0.02") / 1_000_000
# The embedder batches differently from one encode() call (padding, order), so vectors
# agree to float32 rounding, not bit for bit.
TOLERANCE = {"rtol": 1e-4, "atol": 1e-6}


def embedding_line(custom_id: str, text: str | list[str], **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings",
            "body": {"model": MODEL, "input": text, **body}}


def run_batch(client: openai.OpenAI, lines: list[dict[str, Any]]) -> Any:
    upload = client.files.create(file=("embed.jsonl", jsonl(lines)), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/embeddings",
                                  completion_window="24h")
    assert batch.status == "validating" and batch.endpoint == "/v1/embeddings"
    wait_until(lambda: client.batches.retrieve(batch.id).status in ENDED, timeout=180,
               what=f"batch {batch.id} to end", interval=0.3)
    return client.batches.retrieve(batch.id)


def vectors_of(body: dict[str, Any]) -> np.ndarray:
    """The vectors as the SDK hands them to a caller: validated floats, or base64 decoded
    the way `client.embeddings.create()` decodes them."""
    if any(isinstance(item["embedding"], str) for item in body["data"]):
        parsed = parse_embedding_response(
            openai.types.CreateEmbeddingResponse.construct(**body), encoding_format=openai.omit)
    else:
        parsed = openai.types.CreateEmbeddingResponse.model_validate(body)
    assert [item.index for item in parsed.data] == list(range(len(parsed.data)))
    return np.array([item.embedding for item in parsed.data], dtype=np.float32)


def inputs_of(line: dict[str, Any]) -> list[str]:
    text = line["body"]["input"]
    return [text] if isinstance(text, str) else list(text)


@pytest.fixture
def server(runtime: Runtime) -> Iterator[LiveServer]:
    with LiveServer(create_app(runtime)) as live:
        yield live


def test_embeddings_batch_matches_sentence_transformers(
    server: LiveServer, runtime: Runtime, embedder: SentenceTransformerEmbedder
) -> None:
    client = openai_sdk(server)
    lines = [
        embedding_line("one-float", "The capital of France is Paris."),
        embedding_line("many-float", ["Tokyo is in Japan.", "Bananas are yellow.",
                                      "A short one."], dimensions=384),
        embedding_line("one-base64", "Rome is the capital of Italy.",
                       encoding_format="base64", user="user-1"),
        embedding_line("many-base64", ["cats and dogs", "Dogs and cats!"],
                       encoding_format="base64"),
        {"custom_id": "no-model", "method": "POST", "url": "/v1/embeddings",
         "body": {"input": "penny picks the default embedding model"}},
        # An exact copy of the first line's request: single-flight answers it for free.
        embedding_line("copy-float", "The capital of France is Paris."),
        embedding_line("too-long", ["fits", "word " * 300]),
    ]
    with InProcessPipeline(runtime, [], [embedder]):
        ended = run_batch(client, lines)
    assert ended.status == "completed", ended.errors
    assert ended.model == MODEL
    assert ended.request_counts is not None
    assert (ended.request_counts.completed, ended.request_counts.failed) == (6, 1)

    outputs = read_jsonl(client, ended.output_file_id)
    errors = read_jsonl(client, ended.error_file_id)
    answered = [line["custom_id"] for line in outputs + errors]
    assert sorted(answered) == sorted(line["custom_id"] for line in lines)  # each once
    (too_long,) = errors
    assert too_long["custom_id"] == "too-long" and too_long["response"]["status_code"] == 400
    error = too_long["response"]["body"]["error"]
    assert error["code"] == "context_length_exceeded" and "input 1" in error["message"]

    by_id = {line["custom_id"]: line for line in lines}
    for out in outputs:
        line = by_id[out["custom_id"]]
        texts = inputs_of(line)
        assert out["error"] is None and out["id"].startswith("batch_req_")
        body = out["response"]["body"]
        assert out["response"]["status_code"] == 200
        assert (body["object"], body["model"]) == ("list", MODEL)
        wants_base64 = line["body"].get("encoding_format") == "base64"
        assert all(isinstance(d["embedding"], str) == wants_base64 for d in body["data"])
        got = vectors_of(body)
        assert got.shape == (len(texts), 384)
        np.testing.assert_allclose(got, embedder.model.encode(texts), **TOLERANCE)
        tokens = sum(embedder.token_counts(texts))
        assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
        cost = out["penny_cost"]
        assert (cost["input_tokens"], cost["cached_tokens"], cost["output_tokens"]) == (
            tokens, 0, 0)
        assert Decimal(cost["list_cost_usd"]) == tokens * LIST_USD_PER_TOKEN
        if cost["single_flight_jobs"]:
            assert Decimal(cost["cost_usd"]) == 0 and cost["engine_seconds"] == 0
        else:
            assert Decimal(cost["cost_usd"]) > 0 and cost["engine_seconds"] > 0
    copies = [o["custom_id"] for o in outputs if o["penny_cost"]["single_flight_jobs"]]
    assert len(copies) == 1 and copies[0] in ("one-float", "copy-float")  # either may lead

    with runtime.sessions() as session:
        ledger = session.execute(select(LedgerEntry)).scalars().all()
    assert len(ledger) == 6 and {row.model for row in ledger} == {MODEL}
    assert all(row.output_tokens == 0 and row.cached_tokens == 0 for row in ledger)
    served_by = sorted(row.served_by for row in ledger)
    assert served_by == ["engine"] * 5 + ["single_flight"]
    assert ended.usage is not None
    assert ended.usage.input_tokens == sum(row.input_tokens for row in ledger)
    assert ended.usage.output_tokens == 0
    extra = ended.model_extra or {}
    assert Decimal(extra["penny_cost"]["cost_usd"]) == sum(
        Decimal(o["penny_cost"]["cost_usd"]) for o in outputs)


@pytest.fixture
def distributed(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Runtime]:
    """The API and the coalescer here; workers are separate processes reached via Redis."""
    settings = make_settings(tmp_path, database_url, redis_url=redis_url)
    runtime = open_runtime(settings)
    reset_tables(runtime)
    coalescer = Coalescer(settings, runtime.sessions, CeleryDispatcher(make_celery(settings)),
                          runtime.store, settings.served_models)
    stop = threading.Event()
    thread = threading.Thread(target=coalescer.run, args=(stop,), daemon=True)
    thread.start()
    yield runtime
    stop.set()
    thread.join()
    runtime.close()


def test_penny_worker_serves_the_embedding_model_over_redis(
    distributed: Runtime, embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    settings = distributed.settings
    env = {**os.environ, "PENNY_DATABASE_URL": settings.database_url or "",
           "PENNY_REDIS_URL": settings.redis_url or "", "PENNY_DATA_DIR": str(settings.data_dir)}
    penny = Path(sys.executable).with_name("penny")
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen([str(penny), "worker", "--model", MODEL, "--verbose"],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        lines = [embedding_line(f"fruit-{i}", f"A sentence about fruit number {i}.",
                                encoding_format="base64" if i % 2 else "float")
                 for i in range(12)]
        with LiveServer(create_app(distributed)) as server:
            ended = run_batch(openai_sdk(server), lines)
            outputs = read_jsonl(openai_sdk(server), ended.output_file_id)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    log_text = log_path.read_text(errors="replace")
    assert ended.status == "completed", log_text
    assert ended.error_file_id is None
    assert [o["custom_id"] for o in outputs] == [line["custom_id"] for line in lines]
    got = np.concatenate([vectors_of(o["response"]["body"]) for o in outputs])
    expected = embedder.model.encode([line["body"]["input"] for line in lines])
    np.testing.assert_allclose(got, expected, **TOLERANCE)
    assert f"embedder for {MODEL} ready" in log_text and "engine for" not in log_text


@pytest.mark.engine
def test_chat_and_embeddings_batches_share_one_pipeline(
    server: LiveServer, runtime: Runtime, engine: Any, embedder: SentenceTransformerEmbedder
) -> None:
    """What `penny up` runs: the vLLM engine and the embedder side by side, each model's
    jobs planned and run apart. The embeddings input is the shipped example file."""
    client = openai_sdk(server)
    chat = [{"custom_id": f"chat-{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": engine.model_name, "max_tokens": 4,
                      "messages": [{"role": "user", "content": f"Count to {i + 2}."}]}}
            for i in range(2)]
    upload = client.files.create(file=("chat.jsonl", jsonl(chat)), purpose="batch")
    chat_batch = client.batches.create(input_file_id=upload.id,
                                       endpoint="/v1/chat/completions",
                                       completion_window="24h")
    example = [json.loads(line) for line in
               (REPO / "examples" / "openai_embeddings.jsonl").read_text().splitlines()]
    with InProcessPipeline(runtime, [engine], [embedder]):
        embedded = run_batch(client, example)
        wait_until(lambda: client.batches.retrieve(chat_batch.id).status in ENDED,
                   timeout=180, what="the chat batch to end", interval=0.3)
    chatted = client.batches.retrieve(chat_batch.id)
    assert (embedded.status, chatted.status) == ("completed", "completed")
    assert (embedded.model, chatted.model) == (MODEL, engine.model_name)
    vectors = read_jsonl(client, embedded.output_file_id)
    assert [v["custom_id"] for v in vectors] == [line["custom_id"] for line in example]
    for line, out in zip(example, vectors, strict=True):
        np.testing.assert_allclose(vectors_of(out["response"]["body"]),
                                   embedder.model.encode(inputs_of(line)), **TOLERANCE)
    replies = read_jsonl(client, chatted.output_file_id)
    assert [r["response"]["body"]["object"] for r in replies] == ["chat.completion"] * 2
