"""What an embeddings batch bills: the embedder's token counts at the embedding model's
price card, engine time shared by tokens, no output tokens."""

from __future__ import annotations

import struct
import uuid
from decimal import Decimal

from models.queue import ClaimedBatch, ClaimedJob
from penny.settings import (
    OFFLINE_EMBEDDING_MODEL_NAME,
    EmbeddingModel,
    ModelPrice,
    Settings,
)
from workers.embedder import Embedding, EmbeddingRequest
from workers.embedding_execution import embedding_outcomes_for

MODEL = OFFLINE_EMBEDDING_MODEL_NAME


def batch(count: int) -> ClaimedBatch:
    jobs = [ClaimedJob(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), {"input": ["x"]})
            for _ in range(count)]
    return ClaimedBatch(uuid.uuid4(), MODEL, uuid.uuid4(), jobs)


def test_embedding_models_have_their_own_list_price() -> None:
    price = Settings().price_for(MODEL)
    assert price.list_input_usd_per_mtok == Decimal("0.02")  # text-embedding-3-small
    assert price.list_output_usd_per_mtok == 0
    assert price.engine_hour_usd == Settings().default_price.engine_hour_usd  # same box
    assert Settings().price_for("smollm2-135m-instruct") == Settings().default_price
    other = Settings(embedding_models={"e5": EmbeddingModel(source="/m", dimensions=768)})
    assert other.price_for("e5") == other.default_embedding_price
    custom = ModelPrice(engine_hour_usd=Decimal(1), list_input_usd_per_mtok=Decimal("0.13"))
    assert Settings(prices={MODEL: custom}).price_for(MODEL) == custom


def test_ledger_rows_of_an_embeddings_batch() -> None:
    claimed = batch(3)
    embeddings = [
        Embedding("a", vectors=((0.5, -1.0), (0.25, 2.0)), input_tokens=30),
        Embedding("b", input_tokens=300, error_code="context_length_exceeded",
                  error_message="the input has 300 tokens"),
        Embedding("c", vectors=((1.0, 0.0),), input_tokens=10),
    ]
    outcomes = embedding_outcomes_for(claimed, embeddings, 0.8, Settings())
    first, failed, last = outcomes
    assert failed.result is None and failed.ledger is None
    assert failed.error == {"code": "context_length_exceeded",
                            "message": "the input has 300 tokens"}
    assert first.result is not None and first.ledger is not None
    assert first.result["embedding"] == struct.pack("<4f", 0.5, -1.0, 0.25, 2.0)
    assert first.result["embedding_dimensions"] == 2
    assert (first.result["prompt_tokens"], first.result["output_tokens"]) == (30, 0)
    assert first.ledger["input_tokens"] == 30 and first.ledger["output_tokens"] == 0
    assert first.ledger["cached_tokens"] == 0
    # Engine time is shared by tokens among the jobs that ran (30 : 10).
    assert last.ledger is not None
    assert first.ledger["engine_seconds"] == 0.6 and last.ledger["engine_seconds"] == 0.2
    assert first.ledger["list_cost_usd"] == Decimal("0.0000006000")  # 30 x $0.02 / 1M
    assert first.ledger["cost_usd"] == Decimal("0.0000166667")  # 0.6 s at $0.10 / hour


def test_a_stored_job_request_becomes_an_embedding_request() -> None:
    stored = {"input": ["a", "b"], "encoding_format": "base64"}
    assert EmbeddingRequest.from_stored("k", stored) == EmbeddingRequest("k", ("a", "b"))
