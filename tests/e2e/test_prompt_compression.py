"""Opt-in prompt compression on the real engine and the real embedder: a job that asks
for it runs on a prompt cut to the context sentences that matter for its question, the
system prompt and the question untouched; its usage says how large the prompt was, the
ledger credits compression with the prefill it did not pay for, and an identical job that
did not ask runs the whole prompt."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from models.costing import MeasuredSpeed, store_calibration
from penny.runtime import Runtime, open_runtime
from tests.support import LiveServer, make_settings, reset_tables, wait_until
from workers.inprocess import InProcessPipeline
from workers.sentence_embedder import SentenceTransformerEmbedder
from workers.vllm_engine import VllmEngine

pytestmark = pytest.mark.engine

SPEED = MeasuredSpeed(request_overhead_s=0.02, prefill_s_per_token=0.0002,
                      decode_s_per_token_bs1=0.02, decode_s_per_token_full=0.002,
                      full_batch_jobs=64, machine={"cpus": 2}, engine_settings={},
                      samples=[])
FACT = "The lighthouse keeper on Vardo island is named Ingrid Solberg."
FILLER = ["The harbour freezes for a few weeks in the coldest winters.",
          "Fishing boats leave before dawn and come back in the afternoon.",
          "A ferry connects the island with the mainland twice a day.",
          "Tourists mostly come in summer to see the midnight sun.",
          "The old fish market was turned into a small museum.",
          "Many houses are painted red, yellow or white."]
QUESTION = "Who is the lighthouse keeper on Vardo island?"


def body(compress: dict[str, Any] | None) -> dict[str, Any]:
    context = " ".join([*FILLER, FACT, *FILLER, *FILLER])
    request: dict[str, Any] = {
        "messages": [{"role": "system", "content": "Answer from the notes only."},
                     {"role": "user", "content": f"Notes:\n{context}\n{QUESTION}"}],
        "max_tokens": 12, "cache": "off"}
    if compress is not None:
        request["compress"] = compress
    return request


@pytest.fixture
def live(tmp_path: Path, database_url: str, engine: VllmEngine,
         embedder: SentenceTransformerEmbedder) -> Iterator[tuple[Runtime, httpx.Client]]:
    settings = make_settings(tmp_path, database_url,
                             default_embedding_model=embedder.model_name)
    runtime = open_runtime(settings)
    reset_tables(runtime)
    with runtime.sessions() as session:
        store_calibration(session, engine.model_name, SPEED)
    try:
        with InProcessPipeline(runtime, [engine], [embedder]), \
                LiveServer(create_app(runtime)) as server, \
                httpx.Client(base_url=server.url, timeout=30) as client:
            yield runtime, client
    finally:
        runtime.close()


def run(client: httpx.Client, request: dict[str, Any]) -> dict[str, Any]:
    accepted = client.post("/v1/jobs", json=request)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]

    def ended() -> bool:
        return client.get(f"/v1/jobs/{job_id}").json()["status"] in ("succeeded", "failed")

    wait_until(ended, timeout=180, what=f"job {job_id}", interval=0.2)
    job = dict(client.get(f"/v1/jobs/{job_id}").json())
    assert job["status"] == "succeeded", job
    return job


def test_a_compressed_job_reads_a_shorter_prompt_and_the_ledger_credits_it(
    live: tuple[Runtime, httpx.Client],
) -> None:
    _, client = live
    whole = run(client, body(None))
    compressed = run(client, body({"ratio": 0.3, "min_context_chars": 500}))
    assert whole["usage"]["original_prompt_tokens"] is None
    assert Decimal(whole["cost"]["savings_by_mechanism_usd"]["compression"]) == 0
    usage = compressed["usage"]
    # The prompt as sent is the same size either way; the engine read under half of it.
    assert usage["original_prompt_tokens"] == whole["usage"]["prompt_tokens"]
    assert usage["prompt_tokens"] < 0.6 * usage["original_prompt_tokens"]
    saving = Decimal(compressed["cost"]["savings_by_mechanism_usd"]["compression"])
    assert saving > 0
    # The answer still comes from the kept fact.
    assert "Ingrid" in compressed["result"]["text"], compressed["result"]
