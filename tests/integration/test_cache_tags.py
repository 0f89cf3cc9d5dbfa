"""The per-tag cache policy (`PENNY_TAG_CACHE`) and the CSV `cache` column, through the
HTTP API against a real Postgres: a job that names no cache mode takes the mode of the
first tag it carries, on every intake path (native, bulk, CSV upload, OpenAI batch lines,
whose batch metadata tags them); a job, bulk request or line that names one keeps it. The
engine is replaced by scripted generations recorded through the worker's own
`record_batch` (see test_result_cache)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import select

from api.app import create_app
from cache.model_identity import cache_policy
from intake.limits import IntakeLimits
from intake.validation import validate_next_batch
from models.tables import Job
from penny.runtime import Runtime, open_runtime
from penny.settings import Settings
from tests.integration.test_result_cache import job, post, run_queued
from tests.support import jsonl, make_settings, reset_tables

ACME = {"Authorization": "Bearer key-acme"}
POLICY = {"feature=draft": "off", "feature=fresh": "refresh", "nocache": "off"}
QUESTION = "What is the boiling point of water?"


@pytest.fixture
def tagged(tmp_path: Path, database_url: str) -> Iterator[tuple[Runtime, TestClient]]:
    settings = make_settings(tmp_path, database_url, api_keys={"key-acme": "acme"},
                             tag_cache=POLICY)
    runtime = open_runtime(settings)
    reset_tables(runtime)
    try:
        with TestClient(create_app(runtime)) as client:
            # The cache holds the question's answer: an untagged repeat would be a hit.
            post(client, job(QUESTION), ACME)
            assert run_queued(runtime) == 1
            yield runtime, client
    finally:
        runtime.close()


def modes(runtime: Runtime) -> dict[str | None, tuple[str, str]]:
    """custom_id -> (cache mode, status) of every job that has a custom_id."""
    with runtime.sessions() as session:
        return {custom_id: (mode, status) for custom_id, mode, status in session.execute(
            select(Job.custom_id, Job.cache_mode, Job.status).where(
                Job.custom_id.is_not(None)))}


def test_native_jobs_that_name_no_mode_take_their_tags_mode(
    tagged: tuple[Runtime, TestClient],
) -> None:
    runtime, client = tagged
    untagged = post(client, job(QUESTION, custom_id="untagged"), ACME)
    assert untagged["status"] == "succeeded"  # the cache is on: a hit
    off = post(client, job(QUESTION, custom_id="draft", metadata={"feature": "draft"}), ACME)
    assert off["status"] == "queued"  # the tag turned the cache off: no hit
    other_value = post(client, job(QUESTION, custom_id="faq",
                                   metadata={"feature": "faq"}), ACME)
    assert other_value["status"] == "succeeded"  # `feature=draft` needs that value
    any_value = post(client, job(QUESTION, custom_id="keyonly", metadata={"nocache": 0}),
                     ACME)
    assert any_value["status"] == "queued"  # a `key` tag matches any value
    own = post(client, job(QUESTION, custom_id="own", cache="on",
                           metadata={"feature": "draft"}), ACME)
    assert own["status"] == "succeeded"  # the job's own mode wins over its tag's
    assert modes(runtime) == {"untagged": ("on", "succeeded"), "draft": ("off", "queued"),
                              "faq": ("on", "succeeded"), "keyonly": ("off", "queued"),
                              "own": ("on", "succeeded")}


def test_bulk_jobs_take_their_tags_mode_unless_the_request_or_job_names_one(
    tagged: tuple[Runtime, TestClient],
) -> None:
    runtime, client = tagged
    accepted = client.post("/v1/jobs/bulk", headers=ACME, json={"jobs": [
        job(QUESTION, custom_id="b-fresh", metadata={"feature": "fresh"}),
        job(QUESTION, custom_id="b-plain"),
        job(QUESTION, custom_id="b-own", metadata={"feature": "fresh"}, cache="on"),
    ]})
    assert accepted.status_code == 202, accepted.text
    assert len(accepted.json()["from_cache"]) == 2
    whole = client.post("/v1/jobs/bulk", headers=ACME, json={"cache": "on", "jobs": [
        job(QUESTION, custom_id="b-request", metadata={"feature": "draft"})]})
    assert whole.status_code == 202, whole.text
    assert len(whole.json()["from_cache"]) == 1  # the request's mode wins over the tag's
    found = modes(runtime)
    assert found["b-fresh"] == ("refresh", "queued")
    assert found["b-plain"] == found["b-own"] == found["b-request"] == ("on", "succeeded")


def test_a_csv_cache_column_sets_each_rows_mode_and_empty_cells_take_the_tags(
    tagged: tuple[Runtime, TestClient],
) -> None:
    runtime, client = tagged
    data = (f"custom_id,prompt,max_tokens,cache,feature\n"  # as the cached job asked
            f"c-off,{QUESTION},8,off,\n"
            f"c-tag,{QUESTION},8,,draft\n"
            f"c-own,{QUESTION},8,on,draft\n"
            f"c-plain,{QUESTION},8,,\n").encode()
    accepted = client.post("/v1/uploads/csv", headers=ACME,
                           files={"file": ("in.csv", data, "text/csv")})
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["from_cache"] == 2
    found = modes(runtime)
    assert found["c-off"] == ("off", "queued") and found["c-tag"] == ("off", "queued")
    assert found["c-own"] == found["c-plain"] == ("on", "succeeded")
    with runtime.sessions() as session:  # `cache` is a field now, not a tag
        tags = session.execute(select(Job.tags).where(Job.custom_id == "c-own")).scalar_one()
    assert tags == {"feature": "draft"}

    bad = client.post("/v1/uploads/csv", headers=ACME, files={"file": (
        "bad.csv", f"prompt,cache\n{QUESTION},sometimes\n".encode(), "text/csv")})
    assert bad.status_code == 422, bad.text
    [detail] = bad.json()["error"]["details"]
    assert detail["line"] == 2 and "cache" in detail["message"]


def test_openai_batch_lines_take_the_mode_of_their_batchs_metadata(
    tagged: tuple[Runtime, TestClient],
) -> None:
    runtime, client = tagged
    settings = runtime.settings
    body = {"model": settings.default_model, "max_tokens": 8,
            "messages": [{"role": "user", "content": QUESTION}]}
    lines = [{"custom_id": "o-tag", "method": "POST", "url": "/v1/chat/completions",
              "body": body},
             {"custom_id": "o-own", "method": "POST", "url": "/v1/chat/completions",
              "body": {**body, "penny_cache": "on"}}]
    uploaded = client.post("/v1/files", headers=ACME, data={"purpose": "batch"},
                           files={"file": ("in.jsonl", jsonl(lines))}).json()
    created = client.post("/v1/batches", headers=ACME, json={
        "input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions",
        "completion_window": "24h", "metadata": {"feature": "draft"}})
    assert created.status_code == 200, created.text
    validated = validate_next_batch(runtime.sessions, runtime.store,
                                    IntakeLimits.from_settings(settings),
                                    settings.max_batch_requests, cache=cache_policy(settings))
    assert validated is not None and (validated.jobs, validated.from_cache) == (2, 1)
    found = modes(runtime)
    assert found["o-tag"] == ("off", "queued")
    assert found["o-own"] == ("on", "succeeded")


def test_a_policy_asking_for_the_semantic_cache_needs_it_and_every_tag_needs_a_key(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValidationError, match="PENNY_SEMANTIC_CACHE"):
        Settings(data_dir=tmp_path, tag_cache={"feature=faq": "semantic"})
    with pytest.raises(ValidationError, match="needs a metadata key"):
        Settings(data_dir=tmp_path, tag_cache={"=faq": "off"})
    with pytest.raises(ValidationError, match="tag_cache"):
        Settings(data_dir=tmp_path, tag_cache={"feature": "sometimes"})


def _semantic_job(client: TestClient, **fields: Any) -> dict[str, Any]:
    return post(client, job("Is a tomato a fruit?", **fields), ACME)


def test_a_tag_opts_jobs_into_the_semantic_cache(tmp_path: Path,
                                                 pgvector_database_url: str) -> None:
    settings = make_settings(tmp_path, pgvector_database_url, api_keys={"key-acme": "acme"},
                             semantic_cache=True, tag_cache={"feature=faq": "semantic"})
    runtime = open_runtime(settings)
    reset_tables(runtime)
    try:
        with TestClient(create_app(runtime)) as client:
            _semantic_job(client, custom_id="faq", metadata={"feature": "faq"})
            _semantic_job(client, custom_id="other", metadata={"feature": "chat"})
            _semantic_job(client, custom_id="own", metadata={"feature": "faq"}, cache="off")
        assert modes(runtime) == {"faq": ("semantic", "queued"), "other": ("on", "queued"),
                                  "own": ("off", "queued")}
    finally:
        runtime.close()
