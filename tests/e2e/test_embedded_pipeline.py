"""HTTP in, files out, on the real engine: the embedded pipeline (coalescer and worker
in-process) behind a real uvicorn server, against a real Postgres."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from api.app import create_app
from models.tables import Batch, Job, LedgerEntry, Result
from penny.runtime import Runtime
from storage.local import LocalDirectoryStore
from tests.support import LiveServer, wait_until
from workers.inprocess import InProcessPipeline
from workers.vllm_engine import VllmEngine

pytestmark = pytest.mark.engine

SYSTEM = (
    "You are a careful assistant for a geography quiz. Answer with one short sentence. "
    "Name the place directly, do not repeat the question, and do not add extra advice. "
    "If you do not know, say you do not know. Keep to plain English without lists. "
) * 3
QUESTIONS = [f"What is the capital of {c}?" for c in (
    "France", "Japan", "Italy", "Spain", "Germany", "Canada", "Egypt", "Peru", "Kenya", "Chile",
    "Norway", "Greece", "India", "Brazil", "Mexico", "Poland", "Cuba", "Nepal", "Iran", "Fiji",
    "Ghana", "Chad", "Oman", "Laos", "Mali",
)]


def chat_jobs() -> list[dict[str, Any]]:
    shared = [
        {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}],
         "max_tokens": 16, "custom_id": f"shared-{i}"}
        for i, q in enumerate(QUESTIONS)
    ]
    alone = [
        {"messages": [{"role": "user", "content": f"Write the number {i} in words."}],
         "max_tokens": 12, "custom_id": f"alone-{i}", "metadata": {"kind": "alone"}}
        for i in range(25)
    ]
    return shared + alone


@pytest.fixture
def live(runtime: Runtime, engine: VllmEngine) -> Iterator[str]:
    with InProcessPipeline(runtime, [engine]), LiveServer(create_app(runtime)) as server:
        yield server.url


def test_fifty_jobs_over_http_match_the_engine_called_directly(
    runtime: Runtime, engine: VllmEngine
) -> None:
    """All 50 jobs are posted before the pipeline starts, so they form one batch in arrival
    order; the direct call then runs the very same batch. (vLLM's greedy output is not
    batch-invariant on CPU, so comparing against differently composed batches would test
    the kernels, not penny.)"""
    from vllm import SamplingParams

    jobs = chat_jobs()
    with LiveServer(create_app(runtime)) as server, httpx.Client(
        base_url=server.url, timeout=30
    ) as client:
        ids = [client.post("/v1/jobs", json=job).json()["id"] for job in jobs]
        assert len(set(ids)) == 50

        def all_done() -> bool:
            states = [client.get(f"/v1/jobs/{i}").json()["status"] for i in ids]
            return all(s in ("succeeded", "failed") for s in states)

        with InProcessPipeline(runtime, [engine]):
            wait_until(all_done, timeout=240, what="50 jobs to finish", interval=1.0)
        answers = [client.get(f"/v1/jobs/{i}").json() for i in ids]

    with runtime.sessions() as session:
        assert session.execute(select(func.count()).select_from(Batch)).scalar_one() == 1
        position = dict(session.execute(select(Job.custom_id, Job.batch_position)).all())
    # The planner grouped the shared-prompt jobs together; run the batch in its order.
    engine_order = sorted(range(len(jobs)), key=lambda i: position[jobs[i]["custom_id"]])
    assert sorted(position.values()) == list(range(50))
    assert {position[f"shared-{i}"] for i in range(25)} in ({*range(25)}, {*range(25, 50)})
    engine.llm.reset_prefix_cache()
    in_order = engine.llm.chat(
        [jobs[i]["messages"] for i in engine_order],
        [SamplingParams(temperature=0, max_tokens=jobs[i]["max_tokens"]) for i in engine_order],
        use_tqdm=False,
    )
    direct = [in_order[engine_order.index(i)] for i in range(len(jobs))]
    assert [a["status"] for a in answers] == ["succeeded"] * 50
    tokenizer = engine.tokenizer
    for job, answer, expected in zip(jobs, answers, direct, strict=True):
        assert answer["result"]["text"].strip(), answer
        assert answer["result"]["text"] == expected.outputs[0].text, job["custom_id"]
        prompt_ids = tokenizer.apply_chat_template(
            job["messages"], add_generation_prompt=True, tokenize=True, return_dict=False)
        assert answer["usage"]["prompt_tokens"] == len(prompt_ids)
        assert answer["usage"]["completion_tokens"] == len(expected.outputs[0].token_ids)
        assert answer["cost"]["engine_seconds"] > 0
        assert float(answer["cost"]["usd"]) > 0

    shared_cached = [a["usage"]["cached_tokens"] for a in answers[:25]]
    # The first job of the group computes the shared system prompt; the others reuse it.
    assert sum(1 for c in shared_cached if c > 0) >= 24, shared_cached
    assert all(c == 0 or c >= 64 for c in shared_cached)

    with runtime.sessions() as session:
        assert session.execute(select(func.count()).select_from(LedgerEntry)).scalar_one() == 50
        assert session.execute(select(func.count()).select_from(Result)).scalar_one() == 50


def test_bulk_submission_writes_results_and_ledger(live: str, runtime: Runtime) -> None:
    jobs = chat_jobs()[20:30]
    with httpx.Client(base_url=live, timeout=30) as client:
        accepted = client.post("/v1/jobs/bulk", json={"jobs": jobs}).json()
        submission = accepted["submission_id"]

        def completed() -> bool:
            return bool(client.get(f"/v1/submissions/{submission}").json()["status"]
                        == "completed")

        wait_until(completed, timeout=300, what="the submission to complete")
        view = client.get(f"/v1/submissions/{submission}").json()
    assert view["counts"] == {"succeeded": 10}
    store = runtime.store
    assert isinstance(store, LocalDirectoryStore)
    prefix = f"submissions/{submission}"
    results = [json.loads(line) for line in store.get(f"{prefix}/results.jsonl").splitlines()]
    assert [r["custom_id"] for r in results] == [j["custom_id"] for j in jobs]
    assert all(r["status"] == "succeeded" and r["response"]["text"] for r in results)
    ledger = json.loads(store.get(f"{prefix}/ledger.json"))
    assert len(ledger["entries"]) == 10
    assert ledger["totals"]["output_tokens"] == sum(r["usage"]["completion_tokens"]
                                                    for r in results)
    csv_lines = store.get(f"{prefix}/ledger.csv").decode().splitlines()
    assert csv_lines[0].startswith("job_id,line,custom_id,model,status,input_tokens")
    assert len(csv_lines) == 11
    assert view["outputs"]["results"].endswith(f"{prefix}/results.jsonl")


def test_mean_logprob_only_for_jobs_that_ask_for_it(live: str) -> None:
    """Logprobs cost engine speed, so the engine computes them only for jobs with
    `logprobs: true`; one batch mixes both kinds. The same prompt with and without
    logprobs is two requests: a run without logprobs cannot answer the one that wants them."""
    question = [{"role": "user", "content": "What is the capital of France?"}]
    jobs = [{"messages": question, "max_tokens": 8, "logprobs": True, "custom_id": "with"},
            {"messages": question, "max_tokens": 8, "custom_id": "without"},
            {"prompt": "The capital of Italy is", "max_tokens": 8, "logprobs": True,
             "custom_id": "prompt-with"},
            {"prompt": "The capital of Italy is", "max_tokens": 8, "logprobs": False,
             "custom_id": "prompt-without"}]
    with httpx.Client(base_url=live, timeout=30) as client:
        ids = client.post("/v1/jobs/bulk", json={"jobs": jobs}).json()["job_ids"]

        def finished() -> bool:
            return all(client.get(f"/v1/jobs/{i}").json()["status"] == "succeeded"
                       for i in ids)

        wait_until(finished, timeout=240, what="the four jobs to finish", interval=0.5)
        answers = {a["custom_id"]: a for a in (client.get(f"/v1/jobs/{i}").json()
                                               for i in ids)}
    for name in ("with", "prompt-with"):
        logprob = answers[name]["result"]["mean_logprob"]
        assert isinstance(logprob, float) and logprob <= 0.0, answers[name]
    for name in ("without", "prompt-without"):
        assert answers[name]["result"]["mean_logprob"] is None, answers[name]
    assert {a["cost"]["served_by"] for a in answers.values()} == {"engine"}
    assert all(a["usage"]["completion_tokens"] > 0 for a in answers.values())
