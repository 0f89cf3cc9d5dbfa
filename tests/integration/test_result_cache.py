"""The exact result cache against a real Postgres, through the HTTP API: what fills it (a
recording batch), what it answers at intake and for whom, expiry and eviction by the
sweeper, and its management API. The engine is replaced by scripted generations recorded
through the worker's own `record_batch`; tests/e2e/test_result_cache.py runs the real one."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from api.app import create_app
from cache.model_identity import cache_policy
from coalescer.planning import PlannedBatch
from models.queue import claim_batch, claim_queued_jobs, create_batches, record_batch
from models.result_cache import find_cached_answers, sweep_result_cache
from models.tables import Batch, Job, ResultCacheEntry
from penny.runtime import Runtime, open_runtime
from penny.settings import Settings
from tests.support import make_settings, reset_tables
from workers.engine import Generation
from workers.execution import outcomes_for

ACME = {"Authorization": "Bearer key-acme"}
GLOBEX = {"Authorization": "Bearer key-globex"}


def job(content: str, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 8, **fields}


@pytest.fixture
def keyed(tmp_path: Path, database_url: str) -> Iterator[tuple[Runtime, TestClient]]:
    settings = make_settings(tmp_path, database_url,
                             api_keys={"key-acme": "acme", "key-globex": "globex"})
    runtime = open_runtime(settings)
    reset_tables(runtime)
    try:
        with TestClient(create_app(runtime)) as client:
            yield runtime, client
    finally:
        runtime.close()


Script = Callable[[dict[str, Any]], Generation]


def answered(request: dict[str, Any]) -> Generation:
    """A scripted generation: the answer names the question, so answers are told apart."""
    question = request["messages"][-1]["content"]
    return Generation(key="", text=f"answer to {question}", finish_reason="stop",
                      prompt_tokens=20, cached_tokens=4, output_tokens=5, mean_logprob=-0.5)


def run_queued(runtime: Runtime, script: Script = answered, engine_seconds: float = 2.0) -> int:
    """Batch every queued job and record it as a worker would; returns how many ran."""
    settings: Settings = runtime.settings
    model = settings.default_model
    with runtime.sessions() as session:
        rows = claim_queued_jobs(session, model, 1000, timedelta(0))
        if not rows:
            return 0
        plan = PlannedBatch(model=model, job_ids=tuple(r.job.id for r in rows),
                            estimated_tokens=0)
        [batch_id] = create_batches(session, [plan], [None])
        session.commit()
    with runtime.sessions() as session:
        batch = claim_batch(session, batch_id, "scripted-worker", 30)
    assert batch is not None
    generations = [script(claimed.request) for claimed in batch.jobs]
    outcomes = outcomes_for(batch, generations, engine_seconds, settings)
    with runtime.sessions() as session:
        assert record_batch(session, batch, outcomes, engine_seconds,
                            cache_policy(settings, [model]))
    return len(batch.jobs)


def post(client: TestClient, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return dict(response.json())


def read(client: TestClient, job_id: str, headers: dict[str, str]) -> dict[str, Any]:
    response = client.get(f"/v1/jobs/{job_id}", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def batch_rows(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        return int(session.execute(select(func.count()).select_from(Batch)).scalar_one())


def entries(runtime: Runtime) -> list[ResultCacheEntry]:
    with runtime.sessions() as session:
        rows = list(session.execute(select(ResultCacheEntry)).scalars())
        session.expunge_all()
    return rows


def test_a_repeat_is_answered_in_the_request_for_the_same_tenant_only(
    keyed: tuple[Runtime, TestClient],
) -> None:
    runtime, client = keyed
    first = post(client, job("What is 2 + 2?"), ACME)
    assert first["status"] == "queued"
    assert run_queued(runtime) == 1
    source = read(client, first["id"], ACME)
    assert source["cost"]["served_by"] == "engine" and Decimal(source["cost"]["usd"]) > 0

    batches = batch_rows(runtime)
    again = post(client, job("What is 2 + 2?"), ACME)
    assert again["status"] == "succeeded"  # done in the request itself
    hit = read(client, again["id"], ACME)
    assert hit["status"] == "succeeded" and hit["finished_at"] is not None
    assert hit["result"] == source["result"]
    assert hit["usage"] == source["usage"]  # the tokens as the job would have used them
    assert hit["cost"]["served_by"] == "exact_cache"
    assert hit["cost"]["source_job_id"] == first["id"]
    assert Decimal(hit["cost"]["usd"]) == 0 and hit["cost"]["engine_seconds"] == 0
    assert Decimal(hit["cost"]["cache_saved_usd"]) == Decimal(source["cost"]["usd"])
    assert hit["cost"]["list_usd"] == source["cost"]["list_usd"]
    assert batch_rows(runtime) == batches  # no batch, no engine

    # The same request from another tenant is not answered from acme's entry ...
    theirs = post(client, job("What is 2 + 2?"), GLOBEX)
    assert theirs["status"] == "queued"
    assert run_queued(runtime, lambda r: Generation(
        key="", text="globex's own answer", finish_reason="stop", prompt_tokens=20,
        output_tokens=4)) == 1
    # ... and each tenant's repeat is answered from its own entry.
    assert read(client, post(client, job("What is 2 + 2?"), GLOBEX)["id"],
                GLOBEX)["result"]["text"] == "globex's own answer"
    assert read(client, post(client, job("What is 2 + 2?"), ACME)["id"],
                ACME)["result"]["text"] == "answer to What is 2 + 2?"
    assert sorted(e.hits for e in entries(runtime)) == [1, 2]


@pytest.mark.parametrize("change", [
    {"max_tokens": 9}, {"temperature": 0.5, "seed": 3}, {"top_p": 0.9}, {"stop": ["."]},
    {"prompt": "What is 2 + 2?", "messages": None},
    {"messages": [{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "What is 2 + 2?"}]},
])
def test_a_changed_request_or_sampling_parameter_misses(
    keyed: tuple[Runtime, TestClient], change: dict[str, Any]
) -> None:
    runtime, client = keyed
    post(client, job("What is 2 + 2?"), ACME)
    run_queued(runtime, lambda r: Generation(key="", text="4", finish_reason="stop",
                                             prompt_tokens=9, output_tokens=1))
    body = {k: v for k, v in {**job("What is 2 + 2?"), **change}.items() if v is not None}
    assert post(client, body, ACME)["status"] == "queued"


def test_sampled_jobs_are_never_cached_but_seeded_ones_are(
    keyed: tuple[Runtime, TestClient],
) -> None:
    runtime, client = keyed
    sampled = job("Tell me a story.", temperature=0.9)
    seeded = job("Tell me a story.", temperature=0.9, seed=7)
    post(client, sampled, ACME)
    post(client, seeded, ACME)
    assert run_queued(runtime) == 2
    assert len(entries(runtime)) == 1
    assert post(client, sampled, ACME)["status"] == "queued"
    assert post(client, seeded, ACME)["status"] == "succeeded"


def test_failed_jobs_are_never_cached(keyed: tuple[Runtime, TestClient]) -> None:
    runtime, client = keyed

    def fails(request: dict[str, Any]) -> Generation:
        return Generation(key="", error_code="context_length_exceeded",
                          error_message="the prompt is longer than the model reads")

    first = post(client, job("A very long question"), ACME)
    run_queued(runtime, fails)
    assert read(client, first["id"], ACME)["status"] == "failed"
    assert entries(runtime) == []
    assert post(client, job("A very long question"), ACME)["status"] == "queued"


def test_off_neither_reads_nor_writes_and_refresh_replaces_the_entry(
    keyed: tuple[Runtime, TestClient],
) -> None:
    runtime, client = keyed
    never = post(client, job("Capital of Peru?", cache="off"), ACME)
    run_queued(runtime)
    assert entries(runtime) == []  # off: not written
    first = post(client, job("Capital of Peru?"), ACME)
    run_queued(runtime)
    assert post(client, job("Capital of Peru?", cache="off"), ACME)["status"] == "queued"
    run_queued(runtime)
    [entry] = entries(runtime)
    assert entry.source_job_id == uuid.UUID(first["id"]) and entry.hits == 0  # off: not read

    fresh = post(client, job("Capital of Peru?", cache="refresh"), ACME)
    assert fresh["status"] == "queued"  # refresh: never read
    run_queued(runtime, lambda r: Generation(key="", text="Lima.", finish_reason="stop",
                                             prompt_tokens=20, output_tokens=3))
    [entry] = entries(runtime)
    assert entry.source_job_id == uuid.UUID(fresh["id"]) and entry.text == "Lima."
    hit = read(client, post(client, job("Capital of Peru?"), ACME)["id"], ACME)
    assert hit["cost"]["source_job_id"] == fresh["id"] and hit["result"]["text"] == "Lima."
    assert never["id"] != first["id"]


def test_an_expired_entry_is_never_served_and_the_sweeper_removes_it(
    keyed: tuple[Runtime, TestClient],
) -> None:
    runtime, client = keyed
    post(client, job("Capital of Chile?"), ACME)
    run_queued(runtime)
    with runtime.sessions() as session:  # as if the TTL ran out; the sweeper has not run
        session.execute(update(ResultCacheEntry).values(
            expires_at=func.now() - timedelta(seconds=1)))
        session.commit()
    assert post(client, job("Capital of Chile?"), ACME)["status"] == "queued"
    with runtime.sessions() as session:
        swept = sweep_result_cache(session, max_entries_per_tenant=100)
        session.commit()
    assert (swept.expired, swept.evicted) == (1, 0)
    assert entries(runtime) == []
    run_queued(runtime)  # the repeat runs again and fills a fresh entry
    assert len(entries(runtime)) == 1


def test_the_sweeper_evicts_each_tenants_least_recently_used_beyond_the_maximum(
    keyed: tuple[Runtime, TestClient],
) -> None:
    runtime, client = keyed
    for n in range(4):
        post(client, job(f"Question {n}?"), ACME)
        run_queued(runtime)  # one batch each: entries are created in this order
    post(client, job("Question 0?"), GLOBEX)
    run_queued(runtime)
    assert post(client, job("Question 0?"), ACME)["status"] == "succeeded"  # 0 is used again
    with runtime.sessions() as session:
        swept = sweep_result_cache(session, max_entries_per_tenant=2)
        session.commit()
    assert (swept.expired, swept.evicted) == (0, 2)
    kept = {(e.text, e.hits) for e in entries(runtime)}
    # acme keeps its two most recently used (question 0 was hit, question 3 is newest);
    # globex's one entry is under its own maximum.
    assert kept == {("answer to Question 0?", 1), ("answer to Question 3?", 0),
                    ("answer to Question 0?", 0)}


def test_management_api_is_scoped_to_the_tenant(keyed: tuple[Runtime, TestClient]) -> None:
    runtime, client = keyed
    for n in range(3):
        post(client, job(f"Fact {n}?"), ACME)
    post(client, job("Fact 0?"), GLOBEX)
    run_queued(runtime)
    post(client, job("Fact 1?"), ACME)  # a hit

    first = client.get("/v1/cache/entries", params={"limit": 2}, headers=ACME).json()
    assert len(first["data"]) == 2 and first["has_more"] is True
    rest = client.get("/v1/cache/entries", params={"limit": 2, "after": first["last_id"]},
                      headers=ACME).json()
    assert len(rest["data"]) == 1 and rest["has_more"] is False
    mine = first["data"] + rest["data"]
    assert len({e["id"] for e in mine}) == 3
    assert {e["text"] for e in mine} == {f"answer to Fact {n}?" for n in range(3)}

    [theirs] = client.get("/v1/cache/entries", headers=GLOBEX).json()["data"]
    one = client.get(f"/v1/cache/entries/{mine[0]['id']}", headers=ACME)
    assert one.status_code == 200 and one.json()["request"]["messages"]
    assert client.get(f"/v1/cache/entries/{theirs['id']}", headers=ACME).status_code == 404
    assert client.delete(f"/v1/cache/entries/{theirs['id']}", headers=ACME).status_code == 404
    assert client.get("/v1/cache/entries/not-an-id", headers=ACME).status_code == 404
    assert client.get("/v1/cache/entries", params={"after": "x"},
                      headers=ACME).status_code == 422

    stats = client.get("/v1/cache/stats", headers=ACME).json()
    assert (stats["entries"], stats["entry_hits"], stats["hits"], stats["misses"]) == (3, 1, 1, 3)
    assert Decimal(stats["saved_usd"]) > 0

    deleted = client.delete(f"/v1/cache/entries/{mine[0]['id']}", headers=ACME)
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert client.get(f"/v1/cache/entries/{mine[0]['id']}", headers=ACME).status_code == 404
    purged = client.delete("/v1/cache/entries", headers=ACME).json()
    assert purged["deleted"] == 2
    assert client.get("/v1/cache/entries", headers=ACME).json()["data"] == []
    # globex's entry survived acme's purge.
    assert client.get(f"/v1/cache/entries/{theirs['id']}", headers=GLOBEX).status_code == 200


def test_bulk_answers_what_it_can_and_queues_the_rest(
    keyed: tuple[Runtime, TestClient],
) -> None:
    runtime, client = keyed
    post(client, job("Known?"), ACME)
    run_queued(runtime)
    response = client.post("/v1/jobs/bulk", json={"jobs": [job("Known?"), job("New?"),
                                                           job("Known?")]}, headers=ACME)
    assert response.status_code == 202
    body = response.json()
    assert sorted(body["from_cache"]) == sorted([body["job_ids"][0], body["job_ids"][2]])
    with runtime.sessions() as session:
        states = dict(session.execute(select(Job.line_no, Job.status).where(
            Job.submission_id == uuid.UUID(body["submission_id"]))).all())
    assert states == {0: "succeeded", 1: "queued", 2: "succeeded"}
    [entry] = entries(runtime)
    assert entry.hits == 2


def test_the_global_setting_turns_the_cache_off(tmp_path: Path, database_url: str) -> None:
    runtime = open_runtime(make_settings(tmp_path, database_url, result_cache=False))
    reset_tables(runtime)
    try:
        with TestClient(create_app(runtime)) as client:
            post(client, job("What is 2 + 2?"), {})
            run_queued(runtime)
            assert entries(runtime) == []
            assert post(client, job("What is 2 + 2?"), {})["status"] == "queued"
    finally:
        runtime.close()


def test_swapping_the_weights_behind_a_model_name_misses(
    tmp_path: Path, database_url: str
) -> None:
    """Same served name, same request: an answer made by other weights is not served."""

    def weights(name: str, data: bytes) -> str:
        directory = tmp_path / name
        directory.mkdir()
        (directory / "config.json").write_text('{"layers": 2}')
        (directory / "model.safetensors").write_bytes(data)
        return str(directory)

    old, new = weights("old", b"old weights"), weights("new", b"new weights")

    def serving(source: str) -> Runtime:
        return open_runtime(make_settings(tmp_path, database_url, models={"tiny": source},
                                          default_model="tiny"))

    first = serving(old)
    reset_tables(first)
    try:
        with TestClient(create_app(first)) as client:
            post(client, job("What is 2 + 2?"), {})
            run_queued(first)
        for source, expected in ((new, "queued"), (old, "succeeded")):
            runtime = serving(source)
            try:
                with TestClient(create_app(runtime)) as client:
                    assert post(client, job("What is 2 + 2?"), {})["status"] == expected
            finally:
                runtime.close()
    finally:
        first.close()


def test_anthropic_requests_are_answered_when_the_batch_is_created(
    keyed: tuple[Runtime, TestClient],
) -> None:
    runtime, client = keyed
    post(client, job("Capital of Fiji?"), ACME)
    run_queued(runtime)
    params = {"max_tokens": 8, "messages": [{"role": "user", "content": "Capital of Fiji?"}]}
    created = client.post("/v1/messages/batches", headers=ACME, json={"requests": [
        {"custom_id": "cached", "params": params},
        {"custom_id": "fresh", "params": {**params, "penny_cache": "refresh"}},
        {"custom_id": "bad", "params": {**params, "penny_cache": "sometimes"}},
    ]})
    assert created.status_code == 200, created.text
    with runtime.sessions() as session:
        states = {custom_id: (status, error) for custom_id, status, error in session.execute(
            select(Job.custom_id, Job.status, Job.error).where(Job.custom_id.is_not(None)))}
    assert states["cached"] == ("succeeded", None)
    assert states["fresh"] == ("queued", None)
    assert states["bad"][0] == "failed"
    assert "params.penny_cache" in states["bad"][1]["message"]


def test_many_keys_are_filled_and_looked_up_in_slices(
    keyed: tuple[Runtime, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A statement carries at most 65,535 parameters: fills and lookups of big batches go
    in slices (made small here so a few dozen jobs cross them)."""
    import models.result_cache

    monkeypatch.setattr(models.result_cache, "_ROWS_PER_STATEMENT", 40)
    runtime, client = keyed
    bodies = [job(f"Item {n}?") for n in range(45)]
    assert client.post("/v1/jobs/bulk", json={"jobs": bodies}, headers=ACME).status_code == 202
    assert run_queued(runtime) == 45  # filled two entries per statement
    assert len(entries(runtime)) == 45
    again = client.post("/v1/jobs/bulk", json={"jobs": [*bodies, job("Item 45?")]},
                        headers=ACME).json()
    assert len(again["from_cache"]) == 45  # 46 keys: looked up 40 and then 6


def test_embeddings_lines_are_answered_with_the_cached_vectors_when_validated(
    runtime: Runtime,
) -> None:
    from compat.openai_output import render_batch_files
    from compat.vectors import pack_vectors
    from intake.limits import IntakeLimits
    from intake.validation import validate_next_batch
    from models.batches import line_records
    from models.queue import ClaimedJob, JobOutcome
    from models.result_cache import fill_result_cache
    from models.tenants import ensure_tenant
    from tests.support import jsonl

    settings = runtime.settings
    model = settings.default_embedding_model
    policy = cache_policy(settings)
    vectors = ((0.25, -1.5, 3.0),)
    with runtime.sessions() as session:  # as a worker recording an embeddings batch would
        source = ClaimedJob(uuid.uuid4(), ensure_tenant(session, "default").id, uuid.uuid4(),
                            {"input": ["the sea"], "encoding_format": "float"})
        assert fill_result_cache(session, policy, model, [JobOutcome(
            source, {"text": "", "finish_reason": "", "prompt_tokens": 4, "cached_tokens": 0,
                     "output_tokens": 0, "mean_logprob": None,
                     "embedding": pack_vectors(vectors), "embedding_dimensions": 3},
            {"cost_usd": Decimal("0.000001"), "list_cost_usd": Decimal("0.0000001")},
            None)]) == 1
        session.commit()
    lines = [{"custom_id": name, "method": "POST", "url": "/v1/embeddings",
              "body": {"model": model, "input": text}}
             for name, text in (("cached", ["the sea"]), ("new", ["the hill"]))]
    with TestClient(create_app(runtime)) as client:
        upload = client.post("/v1/files", files={"file": ("in.jsonl", jsonl(lines))},
                             data={"purpose": "batch"}).json()
        created = client.post("/v1/batches", json={
            "input_file_id": upload["id"], "endpoint": "/v1/embeddings",
            "completion_window": "24h"})
        assert created.status_code == 200, created.text
    validated = validate_next_batch(runtime.sessions, runtime.store,
                                    IntakeLimits.from_settings(settings),
                                    settings.max_batch_requests, cache=policy)
    assert validated is not None and (validated.jobs, validated.from_cache) == (2, 1)
    with runtime.sessions() as session:
        records = {r.custom_id: r for r in line_records(session, validated.batch_id)}
    assert records["cached"].status == "succeeded" and records["new"].status == "queued"
    files = render_batch_files([records["cached"]], "/v1/embeddings")
    [line] = [json.loads(text) for text in files.output.decode().splitlines()]
    assert line["response"]["body"]["data"][0]["embedding"] == [0.25, -1.5, 3.0]
    assert line["response"]["body"]["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    assert line["penny_cost"]["served_by"] == "exact_cache"
    assert line["penny_cost"]["source_job_id"] == str(source.id)


def test_the_cache_cli_lists_counts_and_purges_against_the_database(
    keyed: tuple[Runtime, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from penny.cli import app

    runtime, client = keyed
    post(client, job("Capital of Oman?"), ACME)
    post(client, job("Capital of Oman?"), GLOBEX)
    run_queued(runtime)
    post(client, job("Capital of Oman?"), ACME)  # a hit
    monkeypatch.setenv("PENNY_DATABASE_URL", runtime.database_url)
    monkeypatch.setenv("PENNY_DATA_DIR", str(runtime.settings.data_dir))
    cli = CliRunner()
    acme_entry = next(e for e in entries(runtime) if e.hits == 1)

    listed = cli.invoke(app, ["cache", "list", "--tenant", "acme"])
    assert listed.exit_code == 0, listed.output
    assert str(acme_entry.id) in listed.output and "answer to Capital of Oman?" in listed.output
    stats = cli.invoke(app, ["cache", "stats", "--tenant", "acme"])
    assert stats.exit_code == 0 and "jobs answered from the cache" in stats.output
    assert cli.invoke(app, ["cache", "purge"]).exit_code != 0  # a tenant or --all is needed
    assert cli.invoke(app, ["cache", "stats", "--tenant", "nobody"]).exit_code != 0
    purged = cli.invoke(app, ["cache", "purge", "--tenant", "globex"])
    assert purged.exit_code == 0 and "deleted 1" in purged.output
    assert [e.id for e in entries(runtime)] == [acme_entry.id]

    # An operator's correction is what the entry serves from then on.
    corrected = cli.invoke(app, ["cache", "correct", str(acme_entry.id), "Muscat."])
    assert corrected.exit_code == 0, corrected.output
    assert "corrected exact cache entry" in corrected.output
    [entry] = entries(runtime)
    assert entry.text == "Muscat." and entry.corrected_at is not None
    assert cli.invoke(app, ["cache", "correct", str(uuid.uuid4()), "x"]).exit_code != 0
    # This Postgres has no pgvector: no semantic entries, and saying so is no error.
    semantic = cli.invoke(app, ["cache", "list", "--semantic"])
    assert semantic.exit_code == 0 and semantic.output.splitlines()[0].startswith("id\t")


def _hits_counted(model: str) -> float:
    from observability import metrics

    return float(metrics.EXACT_CACHE_HITS.labels(model)._value.get())


def test_an_idempotent_replay_of_a_hit_answers_and_bills_nothing_again(
    keyed: tuple[Runtime, TestClient],
) -> None:
    from models.tables import LedgerEntry

    runtime, client = keyed
    model = runtime.settings.default_model
    post(client, job("What is 2 + 2?"), ACME)
    assert run_queued(runtime) == 1
    counted = _hits_counted(model)
    headers = {**ACME, "Idempotency-Key": "repeat-1"}
    first = client.post("/v1/jobs", json=job("What is 2 + 2?"), headers=headers)
    again = client.post("/v1/jobs", json=job("What is 2 + 2?"), headers=headers)
    assert first.status_code == 202 and first.json()["status"] == "succeeded"
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["status"] == "succeeded"
    with runtime.sessions() as session:
        rows = session.execute(select(func.count()).select_from(LedgerEntry).where(
            LedgerEntry.job_id == uuid.UUID(first.json()["id"]))).scalar_one()
    assert rows == 1
    assert [e.hits for e in entries(runtime)] == [1]
    assert _hits_counted(model) == counted + 1


def test_jobs_answered_from_the_cache_take_no_room_in_the_queue(
    tmp_path: Path, database_url: str,
) -> None:
    settings = make_settings(tmp_path, database_url, api_keys={"key-acme": "acme"},
                             max_queued_jobs_per_tenant=1)
    runtime = open_runtime(settings)
    reset_tables(runtime)
    try:
        with TestClient(create_app(runtime)) as client:
            post(client, job("What is 2 + 2?"), ACME)
            assert run_queued(runtime) == 1
            assert post(client, job("Name a colour."), ACME)["status"] == "queued"  # full now
            # A repeat answered from the cache is accepted: it queues nothing ...
            assert post(client, job("What is 2 + 2?"), ACME)["status"] == "succeeded"
            bulk = client.post("/v1/jobs/bulk", headers=ACME,
                               json={"jobs": [job("What is 2 + 2?")] * 2})
            assert bulk.status_code == 202, bulk.text
            assert len(bulk.json()["from_cache"]) == 2
            # ... while a job that would queue is refused.
            refused = client.post("/v1/jobs", json=job("Name a fruit."), headers=ACME)
            assert refused.status_code == 429, refused.text
    finally:
        runtime.close()


def test_a_bulk_submission_sets_the_cache_mode_of_jobs_that_name_none(
    keyed: tuple[Runtime, TestClient],
) -> None:
    from models.tables import Job

    runtime, client = keyed
    accepted = client.post("/v1/jobs/bulk", headers=ACME, json={
        "cache": "refresh",
        "jobs": [job("Is Oman in Asia?"), job("Is Oman in Africa?", cache="off")]})
    assert accepted.status_code == 202, accepted.text
    with runtime.sessions() as session:
        modes = dict(session.execute(select(Job.line_no, Job.cache_mode)).all())
    assert modes == {0: "refresh", 1: "off"}
    # This deployment runs no semantic cache: asking for it is refused, never run as "on".
    single = client.post("/v1/jobs", headers=ACME, json=job("Is Oman in Asia?",
                                                            cache="semantic"))
    assert single.status_code == 422, single.text
    assert single.json()["error"]["param"] == "cache"
    assert "PENNY_SEMANTIC_CACHE" in single.json()["error"]["message"]
    bulk = client.post("/v1/jobs/bulk", headers=ACME, json={
        "cache": "semantic", "jobs": [job("Is Oman in Asia?"), job("Is Oman in Africa?")]})
    assert bulk.status_code == 422, bulk.text
    assert [(d["param"], "PENNY_SEMANTIC_CACHE" in d["message"])
            for d in bulk.json()["error"]["details"]] == [("jobs.0.cache", True),
                                                          ("jobs.1.cache", True)]
    refused = client.post("/v1/jobs/bulk", headers=ACME,
                          json={"cache": "sometimes", "jobs": [job("x")]})
    assert refused.status_code == 422 and "cache" in refused.text


def test_a_lookup_finds_hex_keys_and_any_other_text_alike(
    keyed: tuple[Runtime, TestClient]
) -> None:
    """Keys penny makes (hex digests) travel as an array literal written in one piece;
    any other text is quoted by the driver: both find their entries, and only theirs."""
    runtime, client = keyed
    posted = client.post("/v1/jobs/bulk", json={"jobs": [job("One?"), job("Two?")]},
                         headers=ACME)
    assert posted.status_code == 202
    assert run_queued(runtime) == 2
    hex_key, other = sorted(entry.cache_key for entry in entries(runtime))
    odd = 'a,"b} NULL\\'
    with runtime.sessions() as session:
        session.execute(update(ResultCacheEntry).where(ResultCacheEntry.cache_key == other)
                        .values(cache_key=odd))
        tenant_id = session.execute(select(ResultCacheEntry.tenant_id)).scalars().first()
        assert tenant_id is not None
        assert set(find_cached_answers(session, tenant_id, [hex_key])) == {hex_key}
        assert set(find_cached_answers(session, tenant_id, [odd, hex_key])) == {odd, hex_key}
        assert find_cached_answers(session, tenant_id, [other, "NULL"]) == {}
