"""`POST /v1/uploads/jsonl` against a real Postgres: a native JSONL file (one job request a
line) is streamed into one submission, queued whole or refused whole with every bad line
named, or run without its bad lines when asked; idempotent; its jobs are the jobs the same
requests make through `POST /v1/jobs/bulk`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from intake.csv_upload import CHUNK_ROWS
from penny.runtime import Runtime, open_runtime
from tests.integration.test_csv_uploads import counts, jobs_of
from tests.support import make_settings, reset_tables

ACME = {"Authorization": "Bearer key-acme"}
GLOBEX = {"Authorization": "Bearer key-globex"}
LINES = [
    {"prompt": "What is 2 + 2?", "custom_id": "a", "max_tokens": 8},
    {"messages": [{"role": "user", "content": "Name a colour."}], "custom_id": "b",
     "metadata": {"team": "red"}, "temperature": 0.5, "seed": 3},
    # Not of the plain shape: the general validator builds it.
    {"prompt": "Say hi", "stop": ["\n"], "priority": 5, "completion_window": "1h"},
]


def jsonl(*lines: Any) -> bytes:
    return b"".join(line if isinstance(line, bytes) else json.dumps(line).encode() + b"\n"
                    for line in lines)


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    settings = make_settings(tmp_path, database_url,
                             api_keys={"key-acme": "acme", "key-globex": "globex"},
                             max_csv_upload_bytes=256 * 1024, max_prompt_chars=2000)
    runtime = open_runtime(settings)
    reset_tables(runtime)
    yield runtime
    runtime.close()


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime)) as client:
        yield client


def upload(client: TestClient, data: bytes, headers: dict[str, str] | None = None,
           **form: str) -> Any:
    return client.post("/v1/uploads/jsonl",
                       files={"file": ("in.jsonl", data, "application/jsonl")},
                       data=form, headers={**ACME, **(headers or {})})


def test_a_good_file_is_queued_as_the_same_requests_in_bulk_are(client: TestClient,
                                                                 runtime: Runtime) -> None:
    # A byte-order mark, CRLF line ends and a blank line are all read as meant.
    data = b"\xef\xbb\xbf" + jsonl(LINES[0]).replace(b"\n", b"\r\n") + b"\n" + jsonl(*LINES[1:])
    response = upload(client, data)
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["rows"], body["bad_rows"], body["from_cache"]) == (3, 0, 0)
    uploaded = jobs_of(runtime, body["submission_id"])
    assert [(j.line_no, j.custom_id, j.status) for j in uploaded] == [
        (1, "a", "queued"), (3, "b", "queued"), (4, None, "queued")]
    bulk = client.post("/v1/jobs/bulk", json={"jobs": LINES}, headers=ACME)
    assert bulk.status_code == 202, bulk.text
    same = jobs_of(runtime, bulk.json()["submission_id"])

    def what(job: Any) -> tuple[Any, ...]:
        return (job.model, job.request, job.tags, job.priority, job.estimated_tokens,
                job.single_flight_key, job.cache_mode, job.deadline_at is not None)

    assert [what(j) for j in uploaded] == [what(j) for j in same]


def test_bad_lines_reject_the_file_naming_every_line_and_create_nothing(
    client: TestClient, runtime: Runtime,
) -> None:
    data = jsonl(LINES[0], b"{not json\n", {"prompt": "hi", "model": "nope"},
                 {"prompt": "hi", "max_tokens": "8"}, b"[1, 2]\n", LINES[1])
    response = upload(client, data)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_file"
    assert "4 of 6 rows are invalid; nothing was queued" in error["message"]
    assert [d["line"] for d in error["details"]] == [2, 3, 4, 5]
    messages = [d["message"] for d in error["details"]]
    assert messages[0].startswith("line 2: the line is not valid JSON")
    assert "model 'nope' is not served here" in messages[1]
    assert messages[2].startswith("line 4: max_tokens")
    assert messages[3] == "line 5: each line must be a JSON object"
    assert counts(runtime) == (0, 0)


def test_skip_runs_the_good_lines_and_stores_each_bad_one_failed(
    client: TestClient, runtime: Runtime,
) -> None:
    response = upload(client, jsonl(LINES[0], b"{oops\n", LINES[1]), on_bad_rows="skip")
    assert response.status_code == 202, response.text
    assert (response.json()["rows"], response.json()["bad_rows"]) == (3, 1)
    jobs = jobs_of(runtime, response.json()["submission_id"])
    assert [(j.line_no, j.status) for j in jobs] == [(1, "queued"), (2, "failed"),
                                                     (3, "queued")]
    assert jobs[1].error is not None and jobs[1].error["line"] == 2
    assert jobs[1].error["code"] == "invalid_json"


def test_an_overlong_line_ends_the_file_naming_it(client: TestClient,
                                                  runtime: Runtime) -> None:
    settings = runtime.settings
    too_long = b'{"prompt": "' + b"x" * (6 * settings.max_prompt_chars + 70_000) + b'"}\n'
    response = upload(client, jsonl(LINES[0]) + too_long + jsonl(LINES[1]),
                      on_bad_rows="skip")
    assert response.status_code == 422, response.text
    (detail,) = response.json()["error"]["details"]
    assert detail["line"] == 2 and "line 2 is longer than" in detail["message"]
    assert counts(runtime) == (0, 0)


def test_an_idempotency_key_replays_and_refuses_a_different_file(
    client: TestClient, runtime: Runtime,
) -> None:
    key = {"Idempotency-Key": "lines-1"}
    first = upload(client, jsonl(*LINES), headers=key)
    again = upload(client, jsonl(*LINES), headers=key)
    assert first.status_code == 202 and again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["submission_id"] == first.json()["submission_id"]
    assert upload(client, jsonl(*LINES[:2]), headers=key).status_code == 409
    theirs = client.post("/v1/uploads/jsonl",
                         files={"file": ("in.jsonl", jsonl(*LINES), "application/jsonl")},
                         headers={**GLOBEX, **key})
    assert theirs.status_code == 202
    assert counts(runtime) == (6, 2)


def test_many_lines_go_in_chunks_within_one_submission(client: TestClient,
                                                       runtime: Runtime) -> None:
    lines = CHUNK_ROWS * 2 + 17
    data = b"".join(b'{"prompt": "q%d", "max_tokens": 4}\n' % n for n in range(lines))
    response = upload(client, data)
    assert response.status_code == 202, response.text
    jobs = jobs_of(runtime, response.json()["submission_id"])
    assert [j.line_no for j in jobs] == list(range(1, lines + 1))


def test_a_file_or_a_source_exactly(client: TestClient, runtime: Runtime) -> None:
    neither = client.post("/v1/uploads/jsonl", data={"on_bad_rows": "skip"}, headers=ACME)
    assert neither.status_code == 422 and neither.json()["error"]["param"] == "file"
    empty = upload(client, b"\n\n")
    assert empty.status_code == 422 and "holds no jobs" in empty.json()["error"]["message"]
    assert counts(runtime) == (0, 0)
