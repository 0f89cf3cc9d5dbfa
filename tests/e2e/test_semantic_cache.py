"""The semantic cache on the real engine, the real embedder and Postgres with pgvector: a
paraphrase is answered from the cache with the matched entry and similarity, a near-miss
runs on the engine, another tenant never gets the answer, and an audited hit is re-run."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from api.app import create_app
from cache.semantic_judge import JUDGE_CHOICES, JUDGE_MAX_TOKENS, judge_agrees, judge_messages
from models.semantic_cache import read_counts
from models.tables import Batch, Tenant
from penny.errors import MissingCapability
from penny.runtime import Runtime, open_runtime
from tests.support import LiveServer, make_settings, reset_tables, wait_until
from workers.engine import GenerationRequest, Sampling
from workers.guided_decoding import OutputConstraint
from workers.inprocess import InProcessPipeline
from workers.sentence_embedder import SentenceTransformerEmbedder
from workers.vllm_engine import VllmEngine

pytestmark = pytest.mark.engine

ACME = {"Authorization": "Bearer key-acme"}
GLOBEX = {"Authorization": "Bearer key-globex"}
KEYS = {"key-acme": "acme", "key-globex": "globex"}


def ask(question: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": question}], "max_tokens": 12,
            "cache": "semantic"}


def open_live(tmp_path: Path, url: str, **overrides: Any) -> Runtime:
    settings = make_settings(tmp_path, url, api_keys=KEYS, semantic_cache=True, **overrides)
    runtime = open_runtime(settings)
    reset_tables(runtime)
    return runtime


@pytest.fixture
def live(tmp_path: Path, pgvector_database_url: str, engine: VllmEngine,
         embedder: SentenceTransformerEmbedder) -> Iterator[tuple[Runtime, httpx.Client]]:
    runtime = open_live(tmp_path, pgvector_database_url, semantic_cache_audit_rate=0.0)
    try:
        with InProcessPipeline(runtime, [engine], [embedder]), \
                LiveServer(create_app(runtime)) as server, \
                httpx.Client(base_url=server.url, timeout=30) as client:
            yield runtime, client
    finally:
        runtime.close()


def run(client: httpx.Client, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    accepted = client.post("/v1/jobs", json=body, headers=headers)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]

    def ended() -> bool:
        status = client.get(f"/v1/jobs/{job_id}", headers=headers).json()["status"]
        return status in ("succeeded", "failed")

    wait_until(ended, timeout=180, what=f"job {job_id}", interval=0.2)
    job = dict(client.get(f"/v1/jobs/{job_id}", headers=headers).json())
    assert job["status"] == "succeeded", job
    return job


def engine_jobs(runtime: Runtime) -> int:
    """Jobs the engine ran, over all batches (a semantic hit belongs to its batch but the
    engine never saw it: counted by ledger rows served by the engine instead)."""
    with runtime.sessions() as session:
        return int(session.execute(text(
            "SELECT count(*) FROM ledger_entries WHERE served_by = 'engine'")).scalar_one())


def counts(runtime: Runtime, tenant: str) -> dict[str, int]:
    with runtime.sessions() as session:
        tenant_id = session.execute(select(Tenant.id).where(Tenant.name == tenant)).scalar_one()
        return read_counts(session, tenant_id)


def test_a_paraphrase_is_served_a_near_miss_runs_and_tenants_stay_apart(
    live: tuple[Runtime, httpx.Client],
) -> None:
    runtime, client = live
    first = run(client, ask("Is Paris the capital of France?"), ACME)
    assert first["cost"]["served_by"] == "engine"
    assert engine_jobs(runtime) == 1

    para = run(client, ask("Is Paris France's capital?"), ACME)
    assert para["cost"]["served_by"] == "semantic_cache"
    assert para["result"] == first["result"]
    assert para["cost"]["source_job_id"] == first["id"]
    assert para["cost"]["cache_entry_id"] is not None
    assert 0.8 <= para["cost"]["cache_similarity"] <= 1.0
    assert Decimal(para["cost"]["usd"]) == 0 and para["cost"]["engine_seconds"] == 0
    assert Decimal(para["cost"]["cache_saved_usd"]) == Decimal(first["cost"]["usd"]) > 0
    assert engine_jobs(runtime) == 1  # the engine never saw it

    # Close in embedding space (0.95), opposite in meaning: verification turns it down.
    negated = run(client, ask("Is Paris not the capital of France?"), ACME)
    assert negated["cost"]["served_by"] == "engine"
    assert engine_jobs(runtime) == 2
    assert counts(runtime, "acme").get("rejected:negation", 0) >= 1

    # Tenant B asks the paraphrase: it runs on the engine, never gets tenant A's answer...
    theirs = run(client, ask("Is Paris France's capital?"), GLOBEX)
    assert theirs["cost"]["served_by"] == "engine"
    assert engine_jobs(runtime) == 3
    # ...and its own paraphrase hits its own entry, so the cache is on for B too.
    again = run(client, ask("Is Paris the capital of France?"), GLOBEX)
    assert again["cost"]["served_by"] == "semantic_cache"
    assert again["cost"]["source_job_id"] == theirs["id"]
    assert counts(runtime, "acme")["hits"] == 1 and counts(runtime, "globex")["hits"] == 1

    # Management: A sees its own entries only, and B cannot read or correct them.
    listed = client.get("/v1/cache/semantic/entries", headers=ACME).json()["data"]
    assert {e["question"] for e in listed} == {"Is Paris the capital of France?",
                                              "Is Paris not the capital of France?"}
    entry = para["cost"]["cache_entry_id"]
    assert client.get(f"/v1/cache/semantic/entries/{entry}", headers=ACME).json()["hits"] == 1
    assert client.get(f"/v1/cache/semantic/entries/{entry}", headers=GLOBEX).status_code == 404
    assert client.patch(f"/v1/cache/entries/{entry}", json={"text": "No."},
                        headers=GLOBEX).status_code == 404
    stats = client.get("/v1/cache/semantic/stats", headers=ACME).json()
    assert stats["hits"] == 1 and stats["entries"] == 2 and stats["rejections"]["negation"] >= 1
    assert Decimal(stats["saved_usd"]) == Decimal(first["cost"]["usd"])

    # A corrected answer is served from then on.
    corrected = client.patch(f"/v1/cache/entries/{entry}", json={"text": "Yes, it is."},
                             headers=ACME)
    assert corrected.status_code == 200 and corrected.json()["kind"] == "semantic"
    served = run(client, ask("Is the capital of France Paris?"), ACME)
    assert served["cost"]["served_by"] == "semantic_cache"
    assert served["result"]["text"] == "Yes, it is."

    # A job that did not opt in never reads the semantic cache.
    plain = run(client, {**ask("Is Paris France's capital?"), "cache": "off"}, ACME)
    assert plain["cost"]["served_by"] == "engine"


def test_an_audited_hit_runs_on_the_engine_and_records_its_outcome(
    tmp_path: Path, pgvector_database_url: str, engine: VllmEngine,
    embedder: SentenceTransformerEmbedder,
) -> None:
    runtime = open_live(tmp_path, pgvector_database_url, semantic_cache_audit_rate=1.0)
    try:
        with InProcessPipeline(runtime, [engine], [embedder]), \
                LiveServer(create_app(runtime)) as server, \
                httpx.Client(base_url=server.url, timeout=30) as client:
            run(client, ask("What is the chemical symbol for gold?"), ACME)
            audited = run(client, ask("Which chemical symbol does gold have?"), ACME)
        assert audited["cost"]["served_by"] == "engine"
        with runtime.sessions() as session:
            batches = session.execute(select(func.count()).select_from(Batch)).scalar_one()
            outcomes = session.execute(text("SELECT outcomes FROM semantic_cache")).scalars()
            observed = [o for entry in outcomes for o in entry]
        assert batches == 2
        assert len(observed) == 1 and 0.8 <= observed[0][0] <= 1.0
        assert counts(runtime, "acme")["audits"] == 1
    finally:
        runtime.close()


def test_the_judge_serves_a_candidate_only_when_the_model_confirms_it(
    tmp_path: Path, pgvector_database_url: str, engine: VllmEngine,
    embedder: SentenceTransformerEmbedder,
) -> None:
    """With the judge on, a candidate that passed every rule is put to the worker's model;
    it is served exactly when the model answers yes (asked here the same question alone),
    and a refusal is counted as a `judge` rejection whose job runs on the engine."""
    cached, asked = "Is Paris the capital of France?", "Is Paris France's capital?"
    [verdict] = engine.generate([GenerationRequest(
        key="judge", sampling=Sampling(max_tokens=JUDGE_MAX_TOKENS),
        messages=judge_messages(cached, asked), cache_salt="probe",
        constraint=OutputConstraint(choice=JUDGE_CHOICES))]).generations
    assert verdict.ok and verdict.text in JUDGE_CHOICES, verdict
    agrees = judge_agrees(verdict.text)
    runtime = open_live(tmp_path, pgvector_database_url, semantic_cache_audit_rate=0.0,
                        semantic_cache_judge=True)
    try:
        with InProcessPipeline(runtime, [engine], [embedder]), \
                LiveServer(create_app(runtime)) as server, \
                httpx.Client(base_url=server.url, timeout=30) as client:
            first = run(client, ask(cached), ACME)
            second = run(client, ask(asked), ACME)
        assert first["cost"]["served_by"] == "engine"
        assert second["cost"]["served_by"] == ("semantic_cache" if agrees else "engine")
        tally = counts(runtime, "acme")
        assert tally.get("hits", 0) == int(agrees)
        assert tally.get("rejected:judge", 0) == int(not agrees)
        assert engine_jobs(runtime) == 1 + int(not agrees)
    finally:
        runtime.close()


def test_start_up_is_refused_naming_the_setting_where_postgres_lacks_pgvector(
    tmp_path: Path, database_url: str,
) -> None:
    # The machine's Postgres has no pgvector: it migrates, but the semantic cache refuses.
    settings = make_settings(tmp_path, database_url, semantic_cache=True)
    with pytest.raises(MissingCapability) as refused:
        open_runtime(settings).close()
    assert "PENNY_SEMANTIC_CACHE" in refused.value.message
    assert "pgvector" in refused.value.message
