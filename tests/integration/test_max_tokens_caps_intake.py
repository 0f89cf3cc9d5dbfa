"""A tenant's max_tokens caps on every intake path, through the HTTP API on a real Postgres:
OpenAI batch files (validated by the coalescer's own step), their retries, Anthropic
message batches (tagged by penny's `penny_metadata`), CSV and JSONL uploads. A job of the
capped feature is stored with the cap as its max_tokens and what the client asked for as
`requested_max_tokens`; a job of another feature is stored as asked."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from intake.limits import IntakeLimits
from intake.validation import Outcome, validate_next_batch
from models.tables import Job
from penny.runtime import Runtime
from tests.support import jsonl
from workers.finalize import finalize_ready

MODEL = "smollm2-135m-instruct"


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime)) as client:
        cap = client.put("/v1/max-tokens-caps", json={"feature": "essay", "max_tokens": 4})
        assert cap.status_code == 200, cap.text
        yield client


def stored_sampling(runtime: Runtime, submission_id: str) -> dict[str, dict[str, Any]]:
    """Each job's stored sampling parameters by custom_id (a failed line's: its error)."""
    with runtime.sessions() as session:
        rows = session.execute(select(Job.custom_id, Job.request, Job.error).where(
            Job.submission_id == uuid.UUID(submission_id))).all()
    return {str(custom_id): error or request["sampling"]
            for custom_id, request, error in rows}


def assert_capped(sampling: dict[str, Any], cap: int, asked: int) -> None:
    assert (sampling["max_tokens"], sampling["requested_max_tokens"]) == (cap, asked)


def assert_as_asked(sampling: dict[str, Any], asked: int) -> None:
    assert sampling["max_tokens"] == asked and "requested_max_tokens" not in sampling


def chat_line(custom_id: str, max_tokens: int = 48) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "max_tokens": max_tokens,
                     "messages": [{"role": "user", "content": f"Say {custom_id}."}]}}


def create_batch(client: TestClient, feature: str, lines: list[dict[str, Any]]) -> str:
    upload = client.post("/v1/files", data={"purpose": "batch"},
                         files={"file": ("in.jsonl", jsonl(lines), "application/jsonl")})
    assert upload.status_code == 200, upload.text
    batch = client.post("/v1/batches", json={
        "input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions",
        "completion_window": "24h", "metadata": {"feature": feature}})
    assert batch.status_code == 200, batch.text
    return str(batch.json()["id"])


def validate_all(runtime: Runtime) -> None:
    limits = IntakeLimits.from_settings(runtime.settings)
    while validated := validate_next_batch(runtime.sessions, runtime.store, limits,
                                           runtime.settings.max_batch_requests, None):
        assert validated.outcome == Outcome.QUEUED


def submission_of(batch_id: str) -> str:
    return str(uuid.UUID(hex=batch_id.removeprefix("batch_")))


def test_openai_batch_lines_of_a_capped_feature_are_stored_capped(
    client: TestClient, runtime: Runtime,
) -> None:
    essay = create_batch(client, "essay", [chat_line("e0"), chat_line("e1", 3)])
    other = create_batch(client, "chat", [chat_line("c0")])
    validate_all(runtime)
    capped = stored_sampling(runtime, submission_of(essay))
    assert_capped(capped["e0"], 4, 48)
    assert_as_asked(capped["e1"], 3)  # asked for less than the cap
    assert_as_asked(stored_sampling(runtime, submission_of(other))["c0"], 48)
    shown = client.get(f"/v1/jobs/{_job_id(runtime, submission_of(essay), 'e0')}").json()
    assert shown["max_tokens"] == {"requested": 48, "applied": 4}


def _job_id(runtime: Runtime, submission_id: str, custom_id: str) -> str:
    with runtime.sessions() as session:
        return str(session.execute(select(Job.id).where(
            Job.submission_id == uuid.UUID(submission_id),
            Job.custom_id == custom_id)).scalar_one())


def _cancelled(client: TestClient, runtime: Runtime, batch_id: str) -> None:
    """The batch ended with none of its lines run: every line may be retried."""
    assert client.post(f"/v1/batches/{batch_id}/cancel").status_code == 200
    finalize_ready(runtime.sessions, runtime.store)
    assert client.get(f"/v1/batches/{batch_id}").json()["status"] == "cancelled"


def test_a_retry_keeps_what_the_client_first_asked_for_under_a_lower_cap(
    client: TestClient, runtime: Runtime,
) -> None:
    essay = create_batch(client, "essay", [chat_line("e0"), chat_line("e1", 3)])
    validate_all(runtime)
    _cancelled(client, runtime, essay)
    same = client.post(f"/v1/batches/{essay}/retry")
    assert same.status_code == 200, same.text
    again = stored_sampling(runtime, submission_of(same.json()["id"]))
    assert_capped(again["e0"], 4, 48)  # not capped a second time as if 4 were asked
    assert_as_asked(again["e1"], 3)

    _cancelled(client, runtime, same.json()["id"])
    assert client.put("/v1/max-tokens-caps", json={"feature": "essay",
                                                   "max_tokens": 2}).status_code == 200
    lower = client.post(f"/v1/batches/{same.json()['id']}/retry")
    assert lower.status_code == 200, lower.text
    lowered = stored_sampling(runtime, submission_of(lower.json()["id"]))
    assert_capped(lowered["e0"], 2, 48)  # the original ask, not the 4 it was stored with
    assert_capped(lowered["e1"], 2, 3)


CSV = (b"custom_id,prompt,feature,max_tokens\n"
       b"r1,Write an essay about the sea,essay,48\n"
       b"r2,Say hi,chat,48\n"
       b"r3,Write a short essay,essay,2\n")


def test_csv_rows_of_a_capped_feature_are_stored_capped(
    client: TestClient, runtime: Runtime,
) -> None:
    response = client.post("/v1/uploads/csv", files={"file": ("in.csv", CSV, "text/csv")})
    assert response.status_code == 202, response.text
    stored = stored_sampling(runtime, response.json()["submission_id"])
    assert_capped(stored["r1"], 4, 48)
    assert_as_asked(stored["r2"], 48)
    assert_as_asked(stored["r3"], 2)


def test_csv_rows_the_general_validator_builds_are_capped_too(
    client: TestClient, runtime: Runtime,
) -> None:
    """A `system` column takes a row off the quick path; the cap applies all the same."""
    data = (b"custom_id,system,prompt,feature,max_tokens\n"
            b"r1,Be brief.,Write an essay,essay,48\n"
            b"r2,Be brief.,Say hi,chat,48\n")
    response = client.post("/v1/uploads/csv", files={"file": ("in.csv", data, "text/csv")})
    assert response.status_code == 202, response.text
    stored = stored_sampling(runtime, response.json()["submission_id"])
    assert_capped(stored["r1"], 4, 48)
    assert_as_asked(stored["r2"], 48)


def test_jsonl_lines_of_a_capped_feature_are_stored_capped(
    client: TestClient, runtime: Runtime,
) -> None:
    lines = [
        {"custom_id": "j1", "prompt": "Write an essay", "max_tokens": 48,
         "metadata": {"feature": "essay"}},
        {"custom_id": "j2", "prompt": "Say hi", "max_tokens": 48,
         "metadata": {"feature": "chat"}},
        # `stop` takes the line off the quick path: the general one caps it too.
        {"custom_id": "j3", "prompt": "Write an essay", "max_tokens": 48, "stop": ["."],
         "metadata": {"feature": "essay"}},
    ]
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    response = client.post("/v1/uploads/jsonl",
                           files={"file": ("in.jsonl", data, "application/jsonl")})
    assert response.status_code == 202, response.text
    stored = stored_sampling(runtime, response.json()["submission_id"])
    assert_capped(stored["j1"], 4, 48)
    assert_as_asked(stored["j2"], 48)
    assert_capped(stored["j3"], 4, 48)


def test_without_caps_every_path_stores_what_was_asked(
    client: TestClient, runtime: Runtime,
) -> None:
    assert client.delete("/v1/max-tokens-caps/essay").status_code == 200
    essay = create_batch(client, "essay", [chat_line("e0")])
    validate_all(runtime)
    assert_as_asked(stored_sampling(runtime, submission_of(essay))["e0"], 48)
    response = client.post("/v1/uploads/csv", files={"file": ("in.csv", CSV, "text/csv")})
    assert response.status_code == 202, response.text
    stored = stored_sampling(runtime, response.json()["submission_id"])
    assert_as_asked(stored["r1"], 48)


def test_anthropic_requests_of_a_capped_feature_are_stored_capped(
    client: TestClient, runtime: Runtime,
) -> None:
    def request(custom_id: str, **extra: Any) -> dict[str, Any]:
        return {"custom_id": custom_id, "params": {
            "model": MODEL, "max_tokens": 48,
            "messages": [{"role": "user", "content": f"Say {custom_id}."}], **extra}}

    response = client.post("/v1/messages/batches", json={"requests": [
        request("essay", penny_metadata={"feature": "essay"}),
        request("chat", penny_metadata={"feature": "chat"}),
        # The hosted API's own metadata is not a tag: it changes nothing.
        request("plain", metadata={"user_id": "u-1"}),
        request("bad", penny_metadata=["feature", "essay"]),
    ]})
    assert response.status_code == 200, response.text
    batch_id = str(response.json()["id"]).removeprefix("msgbatch_")
    stored = stored_sampling(runtime, str(uuid.UUID(hex=batch_id)))
    assert_capped(stored["essay"], 4, 48)
    assert_as_asked(stored["chat"], 48)
    assert_as_asked(stored["plain"], 48)
    assert stored["bad"]["code"] == "invalid_request"
    assert stored["bad"]["message"].startswith("params: penny_metadata")
