"""Per-tenant limits against a real Postgres: the queued-jobs limit (429 with Retry-After),
hard and soft monthly budgets, and the body-size limit on a streamed body."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from models.tables import Job, Submission
from penny.runtime import Runtime, open_runtime
from tests.support import jsonl, make_settings, reset_tables

KEYS = {"key-a": "acme", "key-b": "bolt"}
A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}
# "hi" is estimated at 8 prompt tokens (2 chars // 3 + 8); with max_tokens 992 a job is
# at most 1000 tokens: $0.001 at $1 per million tokens in and out.
JOB = {"prompt": "hi", "max_tokens": 992}
ONE_DOLLAR = {"list_input_usd_per_mtok": "1", "list_cached_input_usd_per_mtok": "1",
              "list_output_usd_per_mtok": "1"}
LINE = {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions",
        "body": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}}


def _runtime(tmp_path: Path, database_url: str, **overrides: Any) -> Runtime:
    runtime = open_runtime(make_settings(tmp_path, database_url, api_keys=KEYS, **overrides))
    reset_tables(runtime)
    return runtime


@pytest.fixture
def limited(tmp_path: Path, database_url: str) -> Iterator[tuple[TestClient, Runtime]]:
    runtime = _runtime(tmp_path, database_url, max_queued_jobs_per_tenant=3,
                       queue_full_retry_after_seconds=17)
    with TestClient(create_app(runtime)) as client:
        yield client, runtime
    runtime.close()


def _jobs(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        return int(session.execute(select(func.count()).select_from(Job)).scalar_one())


def test_a_full_queue_is_429_with_retry_after(limited: tuple[TestClient, Runtime]) -> None:
    client, runtime = limited
    first = client.post("/v1/jobs/bulk", json={"jobs": [JOB, JOB]},
                        headers={**A, "Idempotency-Key": "two"})
    assert first.status_code == 202
    refused = client.post("/v1/jobs/bulk", json={"jobs": [JOB, JOB]}, headers=A)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "17"
    error = refused.json()["error"]
    assert (error["code"], error["type"]) == ("queue_full", "rate_limit_error")
    assert "3 jobs queued; 2 are queued and this request adds 2" in error["message"]
    assert _jobs(runtime) == 2  # the refused request left nothing behind

    # A retry of an accepted request is still its replay, not a refusal.
    replay = client.post("/v1/jobs/bulk", json={"jobs": [JOB, JOB]},
                         headers={**A, "Idempotency-Key": "two"})
    assert replay.status_code == 200
    assert client.post("/v1/jobs", json=JOB, headers=A).status_code == 202  # the third
    assert client.post("/v1/jobs", json=JOB, headers=A).status_code == 429
    # A batch whose lines are not read yet needs room left.
    upload = client.post("/v1/files", headers=A, data={"purpose": "batch"},
                         files={"file": ("in.jsonl", jsonl([LINE]), "application/jsonl")})
    batch = client.post("/v1/batches", headers=A, json={
        "input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions",
        "completion_window": "24h"})
    assert batch.status_code == 429
    # The limit is per tenant.
    assert client.post("/v1/jobs/bulk", json={"jobs": [JOB, JOB, JOB]},
                       headers=B).status_code == 202
    assert _jobs(runtime) == 6


def test_budgets_refuse_past_hard_and_warn_past_soft(tmp_path: Path, database_url: str
                                                     ) -> None:
    runtime = _runtime(tmp_path, database_url, default_price=ONE_DOLLAR, tenant_budgets={
        "acme": {"hard_usd": "0.0025"}, "bolt": {"soft_usd": "0.0015"}})
    try:
        with TestClient(create_app(runtime)) as client:
            # acme: $0.002 reserved by two queued jobs; a third would make $0.003.
            assert client.post("/v1/jobs/bulk", json={"jobs": [JOB, JOB]},
                               headers=A).status_code == 202
            refused = client.post("/v1/jobs", json=JOB, headers=A)
            assert refused.status_code == 402
            error = refused.json()["error"]
            assert error["code"] == "budget_exceeded"
            assert "$0.000500 left of its $0.0025 monthly budget" in error["message"]
            assert "may cost up to $0.001000" in error["message"]
            smaller = client.post("/v1/jobs", json={**JOB, "max_tokens": 292}, headers=A)
            assert smaller.status_code == 202  # $0.0003 fits in what is left
            messages = client.post("/v1/messages/batches", headers=A, json={"requests": [
                {"custom_id": "m", "params": {"max_tokens": 992, "messages": [
                    {"role": "user", "content": "hi"}]}}]})
            assert messages.status_code == 402

            # bolt: over its soft budget is accepted, with a warning kept on the submission.
            ok = client.post("/v1/jobs", json=JOB, headers=B).json()
            assert ok["warnings"] == []
            warned = client.post("/v1/jobs", json=JOB, headers=B).json()
            assert [w["code"] for w in warned["warnings"]] == ["soft_budget_exceeded"]
            shown = client.get(f"/v1/submissions/{warned['submission_id']}", headers=B).json()
            assert shown["warnings"] == warned["warnings"]
        with runtime.sessions() as session:
            assert session.execute(select(func.count()).select_from(Submission)
                                   ).scalar_one() == 4
    finally:
        runtime.close()


def test_a_streamed_body_is_refused_once_it_passes_the_limit(
    tmp_path: Path, database_url: str
) -> None:
    """A chunked body with no Content-Length: the app answers 413 after reading just past
    the limit, without waiting for (or buffering) the rest."""
    runtime = _runtime(tmp_path, database_url, max_body_bytes=4096)
    app = create_app(runtime)
    chunk = b" " * 1024
    reads = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": chunk, "more_body": True}  # never ends

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/jobs", "raw_path": b"/v1/jobs",
             "query_string": b"", "root_path": "", "server": ("testserver", 80),
             "client": ("127.0.0.1", 1234),
             "headers": [(b"content-type", b"application/json"),
                         (b"transfer-encoding", b"chunked"),
                         (b"authorization", b"Bearer key-a")]}
    try:
        asyncio.run(asyncio.wait_for(app(scope, receive, send), timeout=60))
    finally:
        runtime.close()
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert start["status"] == 413
    assert json.loads(body)["error"]["code"] == "request_too_large"
    assert reads == 5  # 4096 bytes are allowed; the fifth chunk passes the limit


def test_an_openai_batch_over_the_queue_limit_fails_at_validation_naming_it(
    limited: tuple[TestClient, Runtime],
) -> None:
    """At create the batch's lines are unread: it passes with room for one job. Read, it
    brings four, past the limit of three: it fails, naming the limit, and queues nothing."""
    from intake.admission import IntakePolicy
    from intake.limits import IntakeLimits
    from intake.validation import Outcome, validate_next_batch

    client, runtime = limited
    upload = client.post("/v1/files", headers=A, data={"purpose": "batch"}, files={
        "file": ("in.jsonl", jsonl([{**LINE, "custom_id": f"r{i}"} for i in range(4)]),
                 "application/jsonl")})
    created = client.post("/v1/batches", headers=A, json={
        "input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions",
        "completion_window": "24h"})
    assert created.status_code == 200, created.text
    settings = runtime.settings
    validated = validate_next_batch(runtime.sessions, runtime.store,
                                    IntakeLimits.from_settings(settings),
                                    settings.max_batch_requests,
                                    admission=IntakePolicy.from_settings(settings))
    assert validated is not None and validated.outcome == Outcome.FAILED
    batch = client.get(f"/v1/batches/{created.json()['id']}", headers=A).json()
    assert batch["status"] == "failed"
    (error,) = batch["errors"]["data"]
    assert error["code"] == "queue_full"
    assert "3 jobs queued; 0 are queued and this request adds 4" in error["message"]
    assert _jobs(runtime) == 0
