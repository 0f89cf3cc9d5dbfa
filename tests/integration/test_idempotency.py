"""Idempotency-Key on every create endpoint, against a real server and Postgres: duplicates
fired at the same moment make one object and all get its answer; a sequential retry
replays; a different body is a 409; keys are per tenant and expire."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from api.app import create_app
from models.submissions import forget_expired_idempotency_keys
from models.tables import Job, StoredFile, Submission
from penny.runtime import Runtime, open_runtime
from tests.support import LiveServer, jsonl, make_settings, reset_tables

KEYS = {"key-a": "acme", "key-b": "bolt"}
A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}
JOB = {"messages": [{"role": "user", "content": "What is 2 + 2?"}], "max_tokens": 8}
LINE = {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions",
        "body": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}}
MESSAGE = {"custom_id": "m1", "params": {"max_tokens": 8,
                                         "messages": [{"role": "user", "content": "hi"}]}}
COPIES = 8


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    runtime = open_runtime(make_settings(tmp_path, database_url, api_keys=KEYS))
    reset_tables(runtime)
    yield runtime
    runtime.close()


@pytest.fixture
def server(runtime: Runtime) -> Iterator[LiveServer]:
    with LiveServer(create_app(runtime)) as server:
        yield server


def _count(runtime: Runtime, table: Any) -> int:
    with runtime.sessions() as session:
        return int(session.execute(select(func.count()).select_from(table)).scalar_one())


def _upload(http: httpx.Client, headers: dict[str, str], data: bytes = b"") -> httpx.Response:
    return http.post("/v1/files", headers=headers, data={"purpose": "batch"},
                     files={"file": ("in.jsonl", data or jsonl([LINE]), "application/jsonl")})


def _file_id(server: LiveServer) -> str:
    with httpx.Client(base_url=server.url) as http:
        return str(_upload(http, A).json()["id"])


Send = Callable[[httpx.Client, dict[str, str]], httpx.Response]


def _endpoints(server: LiveServer) -> dict[str, tuple[Send, Callable[[httpx.Response], str]]]:
    """name -> (send the create request with these headers, the created object's id)."""
    file_id = _file_id(server)
    batch = {"input_file_id": file_id, "endpoint": "/v1/chat/completions",
             "completion_window": "24h"}
    return {
        "job": (lambda h, hd: h.post("/v1/jobs", json=JOB, headers=hd),
                lambda r: r.json()["submission_id"]),
        "bulk": (lambda h, hd: h.post("/v1/jobs/bulk", json={"jobs": [JOB, JOB]}, headers=hd),
                 lambda r: r.json()["submission_id"]),
        "file": (_upload, lambda r: r.json()["id"]),
        "openai_batch": (lambda h, hd: h.post("/v1/batches", json=batch, headers=hd),
                         lambda r: r.json()["id"]),
        "message_batch": (lambda h, hd: h.post("/v1/messages/batches",
                                               json={"requests": [MESSAGE]}, headers=hd),
                          lambda r: r.json()["id"]),
    }


def _fire_at_once(server: LiveServer, send: Send, headers: dict[str, str]
                  ) -> list[httpx.Response]:
    start = threading.Barrier(COPIES)

    def one(_: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            start.wait()
            return send(http, headers)

    with ThreadPoolExecutor(COPIES) as pool:
        return list(pool.map(one, range(COPIES)))


def test_concurrent_duplicates_make_one_object_on_every_create_endpoint(
    server: LiveServer, runtime: Runtime
) -> None:
    endpoints = _endpoints(server)
    files_before = _count(runtime, StoredFile)
    for name, (send, object_id) in endpoints.items():
        submissions, jobs, files = (_count(runtime, Submission), _count(runtime, Job),
                                    _count(runtime, StoredFile))
        answers = _fire_at_once(server, send, {**A, "Idempotency-Key": f"same-{name}"})
        assert all(r.status_code < 300 for r in answers), [r.text for r in answers]
        ids = {object_id(r) for r in answers}
        assert len(ids) == 1, (name, ids)
        replays = [r for r in answers if r.headers.get("Idempotent-Replayed") == "true"]
        assert len(replays) == COPIES - 1, name
        created_submissions = _count(runtime, Submission) - submissions
        created_jobs = _count(runtime, Job) - jobs
        created_files = _count(runtime, StoredFile) - files
        expected = {"job": (1, 1, 0), "bulk": (1, 2, 0), "file": (0, 0, 1),
                    "openai_batch": (1, 0, 0), "message_batch": (1, 1, 0)}[name]
        assert (created_submissions, created_jobs, created_files) == expected, name
    assert _count(runtime, StoredFile) == files_before + 1


def test_sequential_retry_replays_and_a_different_body_conflicts(
    server: LiveServer, runtime: Runtime
) -> None:
    with httpx.Client(base_url=server.url) as http:
        first = _upload(http, {**A, "Idempotency-Key": "up-1"})
        again = _upload(http, {**A, "Idempotency-Key": "up-1"})
        other = _upload(http, {**A, "Idempotency-Key": "up-1"}, data=jsonl([LINE, LINE]))
        message = {"requests": [MESSAGE]}
        m1 = http.post("/v1/messages/batches", json=message,
                       headers={**A, "Idempotency-Key": "mb-1"})
        m2 = http.post("/v1/messages/batches", json={"requests": [{**MESSAGE,
                                                                   "custom_id": "m2"}]},
                       headers={**A, "Idempotency-Key": "mb-1"})
        # Keys are per tenant: B's identical key and body make B's own object.
        b_file = _upload(http, {**B, "Idempotency-Key": "up-1"})
    assert again.json() == first.json()
    assert (other.status_code, other.json()["error"]["code"]) == (409, "idempotency_key_reused")
    assert m1.status_code == 200
    assert (m2.status_code, m2.json()["error"]["code"]) == (409, "idempotency_key_reused")
    assert b_file.status_code == 200
    assert b_file.json()["id"] != first.json()["id"]
    assert _count(runtime, StoredFile) == 2


def test_keys_expire_after_the_window(tmp_path: Path, database_url: str) -> None:
    runtime = open_runtime(make_settings(tmp_path, database_url, api_keys=KEYS,
                                         idempotency_window_seconds=3600))
    reset_tables(runtime)
    try:
        with LiveServer(create_app(runtime)) as server, \
                httpx.Client(base_url=server.url) as http:
            headers = {**A, "Idempotency-Key": "daily"}
            first = http.post("/v1/jobs", json=JOB, headers=headers).json()
            file_first = _upload(http, headers).json()
            # Age both past the window, as if they had been sent two hours ago.
            with runtime.sessions() as session:
                two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
                session.execute(update(Submission).values(created_at=two_hours_ago))
                session.execute(update(StoredFile).values(created_at=two_hours_ago))
                session.commit()
            later = http.post("/v1/jobs", json=JOB, headers=headers)
            file_later = _upload(http, headers)
        assert later.status_code == 202 and "Idempotent-Replayed" not in later.headers
        assert later.json()["submission_id"] != first["submission_id"]
        assert file_later.json()["id"] != file_first["id"]

        # The sweeper's share frees the keys of rows past the window, and only those.
        with runtime.sessions() as session:
            cutoff = datetime.now(UTC) - timedelta(hours=1)
            assert forget_expired_idempotency_keys(session, cutoff) == 0
            session.execute(update(Submission).values(created_at=two_hours_ago))
            session.execute(update(StoredFile).values(created_at=two_hours_ago))
            freed = forget_expired_idempotency_keys(session, cutoff)
            session.commit()
            keyed = session.execute(select(func.count()).select_from(Submission).where(
                Submission.idempotency_key.is_not(None))).scalar_one()
        assert (freed, keyed) == (2, 0)  # the new job's and the new upload's
    finally:
        runtime.close()
