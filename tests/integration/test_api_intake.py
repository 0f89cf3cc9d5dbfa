"""Intake over HTTP against a real Postgres: bad input gets a precise 4xx and creates
nothing; good input is committed before the answer; idempotency keys never double-queue."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from models.tables import Job, Submission
from penny.runtime import Runtime, open_runtime
from tests.support import make_settings

GOOD_JOB = {"messages": [{"role": "user", "content": "What is 2 + 2?"}], "max_tokens": 8}


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime)) as client:
        yield client


def counts(runtime: Runtime) -> tuple[int, int]:
    with runtime.sessions() as session:
        jobs = session.execute(select(func.count()).select_from(Job)).scalar_one()
        submissions = session.execute(select(func.count()).select_from(Submission)).scalar_one()
    return jobs, submissions


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({**GOOD_JOB, "model": "gpt-17"}, 404, "model_not_found", "model"),
        ({**GOOD_JOB, "max_tokens": -1}, 422, "invalid_request", "max_tokens"),
        ({**GOOD_JOB, "max_tokens": 0}, 422, "invalid_request", "max_tokens"),
        ({**GOOD_JOB, "max_tokens": 1_000_000}, 422, "invalid_request", "max_tokens"),
        ({"messages": [], "max_tokens": 8}, 422, "invalid_request", "messages"),
        ({"messages": [{"role": "user", "content": ""}]}, 422, "invalid_request",
         "messages.0.content"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, 422, "invalid_request",
         "messages.0.role"),
        ({"max_tokens": 8}, 422, "invalid_request", "body"),
        ({**GOOD_JOB, "prompt": "also a prompt"}, 422, "invalid_request", "body"),
        ({**GOOD_JOB, "temperature": 9}, 422, "invalid_request", "temperature"),
        ({**GOOD_JOB, "surprise": True}, 422, "invalid_request", "surprise"),
        ({**GOOD_JOB, "stop": ["a", "b", "c", "d", "e"]}, 422, "invalid_request", "stop"),
        ([GOOD_JOB], 422, "invalid_request", "body"),
    ],
)
def test_bad_job_gets_precise_error_and_creates_nothing(
    client: TestClient, runtime: Runtime, body: object, status: int, code: str, param: str
) -> None:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["param"] == param
    assert counts(runtime) == (0, 0)


def test_malformed_json_is_400_and_creates_nothing(client: TestClient, runtime: Runtime) -> None:
    response = client.post("/v1/jobs", content=b'{"messages": [', headers={
        "content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    assert counts(runtime) == (0, 0)


def test_oversized_body_is_413_and_creates_nothing(
    tmp_path: Path, database_url: str
) -> None:
    runtime = open_runtime(make_settings(tmp_path, database_url, max_body_bytes=2048))
    try:
        before = counts(runtime)
        with TestClient(create_app(runtime)) as client:
            big = {"messages": [{"role": "user", "content": "x" * 5000}]}
            response = client.post("/v1/jobs", json=big)
            assert response.status_code == 413
            assert response.json()["error"]["code"] == "request_too_large"

            def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must still hold
                yield b'{"messages": [{"role": "user", "content": "'
                for _ in range(10):
                    yield b"y" * 500
                yield b'"}]}'

            streamed = client.post("/v1/jobs", content=chunks(),
                                   headers={"content-type": "application/json"})
            assert streamed.status_code == 413
        assert counts(runtime) == before
    finally:
        runtime.close()


def test_bulk_with_bad_items_names_each_and_queues_none(
    client: TestClient, runtime: Runtime
) -> None:
    jobs = [GOOD_JOB, {**GOOD_JOB, "model": "nope"}, GOOD_JOB, {**GOOD_JOB, "max_tokens": 99999}]
    response = client.post("/v1/jobs/bulk", json={"jobs": jobs})
    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert [(d["index"], d["code"]) for d in details] == [
        (1, "model_not_found"), (3, "invalid_request")]
    assert counts(runtime) == (0, 0)


def test_bulk_empty_is_rejected(client: TestClient, runtime: Runtime) -> None:
    response = client.post("/v1/jobs/bulk", json={"jobs": []})
    assert response.status_code == 422
    assert response.json()["error"]["param"] == "jobs"
    assert counts(runtime) == (0, 0)


def test_job_is_queued_and_readable(client: TestClient, runtime: Runtime) -> None:
    response = client.post("/v1/jobs", json={**GOOD_JOB, "metadata": {"team": "search"},
                                             "custom_id": "q-1"})
    assert response.status_code == 202
    job_id = response.json()["id"]
    # Committed before the answer: a fresh session sees it.
    assert counts(runtime) == (1, 1)
    read = client.get(f"/v1/jobs/{job_id}").json()
    assert read["status"] == "queued"
    assert read["metadata"] == {"team": "search"}
    assert read["custom_id"] == "q-1"
    assert read["model"] == runtime.settings.default_model
    assert read["result"] is None and read["cost"] is None


def test_idempotency_key_replays_and_conflicts(client: TestClient, runtime: Runtime) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = client.post("/v1/jobs", json=GOOD_JOB, headers=headers)
    again = client.post("/v1/jobs", json=GOOD_JOB, headers=headers)
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    conflict = client.post("/v1/jobs", json={**GOOD_JOB, "max_tokens": 9}, headers=headers)
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "idempotency_key_reused"
    assert counts(runtime) == (1, 1)


def test_unknown_and_malformed_ids_are_404(client: TestClient) -> None:
    assert client.get("/v1/jobs/00000000-0000-0000-0000-000000000000").status_code == 404
    assert client.get("/v1/jobs/not-a-uuid").status_code == 404
    assert client.get("/v1/submissions/not-a-uuid").status_code == 404


def test_api_keys_separate_tenants(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url, api_keys={"key-a": "acme", "key-b": "bolt"})
    runtime = open_runtime(settings)
    try:
        with TestClient(create_app(runtime)) as client:
            assert client.post("/v1/jobs", json=GOOD_JOB).status_code == 401
            bad = client.post("/v1/jobs", json=GOOD_JOB, headers={"Authorization": "Bearer x"})
            assert bad.status_code == 401
            created = client.post("/v1/jobs", json=GOOD_JOB,
                                  headers={"Authorization": "Bearer key-a"})
            job_id = created.json()["id"]
            mine = client.get(f"/v1/jobs/{job_id}", headers={"Authorization": "Bearer key-a"})
            theirs = client.get(f"/v1/jobs/{job_id}", headers={"Authorization": "Bearer key-b"})
            assert mine.status_code == 200
            assert theirs.status_code == 404
    finally:
        runtime.close()
