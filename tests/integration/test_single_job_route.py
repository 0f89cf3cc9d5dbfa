"""`POST /v1/jobs` takes a shorter way than FastAPI's generic handling when nothing is
unusual (api.direct_route). Every request here is sent both ways, to the same app with
and without a dependency override (an override sends every request FastAPI's way), and
must get the same answer: the same status, the same error body, the same job stored."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import select

import api.jobs
from api.app import create_app
from api.direct_route import DirectCreateRoute
from api.json_body import JsonBodyRoute
from intake.fast_jobs import plain_job as fast_plain_job
from models.tables import Job
from penny.runtime import Runtime, open_runtime
from tests.support import make_settings

GOOD = {"messages": [{"role": "user", "content": "What is 2 + 2?"}], "max_tokens": 8}
JSON = {"Content-Type": "application/json"}


def _unused_dependency() -> None:  # pragma: no cover - never called, only overridden
    raise AssertionError


def generic_way(app: FastAPI) -> None:
    """Every request of `app` through FastAPI's own handling from now on."""
    app.dependency_overrides[_unused_dependency] = _unused_dependency


def answer(client: TestClient, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    response = client.post("/v1/jobs", content=body, headers=headers)
    try:
        document = response.json()
    except ValueError:
        document = response.text
    if response.status_code in (200, 202):  # ids differ; their presence and shape do not
        document = {key: (type(value).__name__ if key in ("id", "submission_id") else value)
                    for key, value in document.items()}
    return response.status_code, document


REQUESTS: list[tuple[str, bytes, dict[str, str]]] = [
    ("good", json.dumps(GOOD).encode(), JSON),
    ("good, +json type", json.dumps(GOOD).encode(),
     {"Content-Type": "application/vnd.api+json; charset=utf-8"}),
    ("a field out of range", json.dumps({**GOOD, "max_tokens": 0}).encode(), JSON),
    ("two fields wrong", json.dumps({**GOOD, "temperature": "hot", "surprise": 1}).encode(),
     JSON),
    ("an unknown model", json.dumps({**GOOD, "model": "gpt-17"}).encode(), JSON),
    ("neither prompt nor messages", b'{"max_tokens": 8}', JSON),
    ("a list", json.dumps([GOOD]).encode(), JSON),
    ("null", b"null", JSON),
    ("no body", b"", JSON),
    ("not JSON typed", json.dumps(GOOD).encode(), {"Content-Type": "text/plain"}),
    ("no content type", json.dumps(GOOD).encode(), {}),
    ("broken JSON", b'{"messages": [', JSON),
    ("an empty Idempotency-Key", json.dumps(GOOD).encode(), {**JSON, "Idempotency-Key": ""}),
    ("a long Idempotency-Key", json.dumps(GOOD).encode(),
     {**JSON, "Idempotency-Key": "k" * 256}),
]


@pytest.fixture
def app(runtime: Runtime) -> FastAPI:
    return create_app(runtime)


@pytest.mark.parametrize(("name", "body", "headers"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_the_direct_way_answers_as_fastapi_does(
    app: FastAPI, runtime: Runtime, name: str, body: bytes, headers: dict[str, str]
) -> None:
    with TestClient(app) as client:
        direct = answer(client, body, headers)
        generic_way(app)
        generic = answer(client, body, headers)
    assert direct == generic
    if name.startswith("good"):
        assert direct[0] == 202 and direct[1]["status"] == "queued"
    with runtime.sessions() as session:
        stored = session.execute(select(Job.request)).scalars().all()
    # Two good requests store two equal jobs; no other request stores anything.
    assert len(stored) == (2 if name.startswith("good") else 0)
    assert len({json.dumps(request, sort_keys=True) for request in stored}) <= 1


def test_the_tenant_is_checked_before_the_body_both_ways(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path, database_url, api_keys={"key-a": "acme"})
    runtime = open_runtime(settings)
    try:
        app = create_app(runtime)
        with TestClient(app) as client:
            sent = [(json.dumps({**GOOD, "max_tokens": 0}).encode(), JSON),
                    (json.dumps(GOOD).encode(), {**JSON, "Authorization": "Bearer wrong"})]
            direct = [answer(client, body, headers) for body, headers in sent]
            generic_way(app)
            generic = [answer(client, body, headers) for body, headers in sent]
        assert direct == generic
        assert [status for status, _ in direct] == [401, 401]
    finally:
        runtime.close()


def test_an_endpoint_of_another_shape_is_refused_when_the_route_is_made() -> None:
    async def with_extra(body: dict[str, Any], page: int = 0) -> None:
        raise AssertionError

    with pytest.raises(TypeError, match="shape"):
        DirectCreateRoute("/x", with_extra, methods=["POST"])
    JsonBodyRoute("/x", with_extra, methods=["POST"])  # the general route takes it


@pytest.fixture
def routes(app: FastAPI) -> Iterator[list[APIRoute]]:
    yield [r for r in app.routes if isinstance(r, APIRoute)]


def test_only_the_single_job_route_goes_the_direct_way(routes: list[APIRoute]) -> None:
    direct = [(r.path, sorted(r.methods)) for r in routes if isinstance(r, DirectCreateRoute)]
    assert direct == [("/v1/jobs", ["POST"])]


PLAIN: list[tuple[dict[str, Any], dict[str, str]]] = [
    (GOOD, {}),
    ({"prompt": "Write an essay.", "max_tokens": 100, "metadata": {"feature": "essay"}}, {}),
    ({"messages": [{"role": "system", "content": "Be brief."},
                   {"role": "user", "content": "Why is the sky blue?"}],
      "temperature": 0.5, "seed": 3, "top_p": 0.9, "priority": 5, "custom_id": "c-1",
      "metadata": {"team": "x"}, "cache": "off"}, {}),
    ({"prompt": "Again?", "temperature": 1}, {"x-stainless-retry-count": "2"}),
]
STORED = (Job.model, Job.request, Job.tags, Job.priority, Job.estimated_tokens, Job.status,
          Job.cache_mode, Job.custom_id, Job.single_flight_key, Job.client_retry_count,
          Job.deadline_at, Job.route)


def test_a_plain_job_is_stored_as_the_general_way_stores_it(
    app: FastAPI, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain bodies skip the request model (`intake.fast_jobs`) once the tenant's caps are
    known; what they store is what the model's way stores, caps and retry header too."""
    built: list[object] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        job = fast_plain_job(*args, **kwargs)
        built.append(job)
        return job

    monkeypatch.setattr(api.jobs, "plain_job", counted)
    with TestClient(app) as client:
        cap = client.put("/v1/max-tokens-caps", json={"feature": "essay", "max_tokens": 4})
        assert cap.status_code == 200, cap.text
        # The first job reads the tenant's caps (the model's way, off the event loop).
        assert client.post("/v1/jobs", json=GOOD).status_code == 202
        direct = [client.post("/v1/jobs", json=body, headers=headers)
                  for body, headers in PLAIN]
        generic_way(app)
        generic = [client.post("/v1/jobs", json=body, headers=headers)
                   for body, headers in PLAIN]
    assert len(built) == len(PLAIN) and all(job is not None for job in built)
    assert [r.status_code for r in direct + generic] == [202] * (2 * len(PLAIN))
    with runtime.sessions() as session:
        rows = {row[0]: tuple(row[1:]) for row in session.execute(
            select(Job.id, *STORED))}
    for one, other in zip(direct, generic, strict=True):
        assert rows[uuid.UUID(one.json()["id"])] == rows[uuid.UUID(other.json()["id"])]
    capped = rows[uuid.UUID(direct[1].json()["id"])]
    assert capped[1]["sampling"]["max_tokens"] == 4  # the cap applies the plain way too
    assert rows[uuid.UUID(direct[3].json()["id"])][9] == 2  # the retry header's count
