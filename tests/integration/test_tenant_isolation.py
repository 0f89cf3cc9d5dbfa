"""Tenant isolation, probed through every route: objects tenant A made are a 404 for
tenant B on every route that takes an id (never a 403), listings never show them, and B
cannot build on them (a batch from A's file). A probes the same routes as the positive
control, so a route that 404s for everyone cannot pass. Also: reads never create tenants."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from api.batch_views import ANTHROPIC_BATCH_PREFIX
from intake.batches import batch_uuid
from models.tables import ResultCacheEntry, Tenant
from penny.runtime import Runtime, open_runtime
from tests.support import jsonl, make_settings, reset_tables
from workers.finalize import finalize_ready

A = {"Authorization": "Bearer key-acme"}
ADMIN = {"Authorization": "Bearer admin-secret"}
JOB = {"messages": [{"role": "user", "content": "What is 2 + 2?"}], "max_tokens": 8}
LINE = {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions",
        "body": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}}
MESSAGE = {"custom_id": "m1", "params": {"max_tokens": 8,
                                         "messages": [{"role": "user", "content": "hi"}]}}
# A's default webhook endpoint; nothing here delivers to it.
HOOK = "http://127.0.0.1:9/hooks/penny"
OUTPUTS = ("results", "ledger_json", "ledger_csv")


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    runtime = open_runtime(make_settings(tmp_path, database_url,
                                         api_keys={"key-acme": "acme"},
                                         admin_api_keys=["admin-secret"],
                                         webhook_allow_loopback=True))
    reset_tables(runtime)
    yield runtime
    runtime.close()


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime)) as client:
        yield client


def _tenant_count(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        return int(session.execute(select(func.count()).select_from(Tenant)).scalar_one())


def _ended_message_batch_of_a(client: TestClient, runtime: Runtime) -> tuple[str, str]:
    """A submission of A's that has ended (a message batch cancelled before it ran, then
    finalized): its outputs are written and its webhook event is in the outbox, sent to
    A's default endpoint."""
    assert client.put("/v1/webhooks/endpoint", json={"url": HOOK}, headers=A).status_code == 200
    made = client.post("/v1/messages/batches", headers=A, json={"requests": [MESSAGE]})
    assert made.status_code == 200, made.text
    message_batch_id = made.json()["id"]
    cancelled = client.post(f"/v1/messages/batches/{message_batch_id}/cancel", headers=A)
    assert cancelled.status_code == 200, cancelled.text
    submission_id = batch_uuid(message_batch_id, ANTHROPIC_BATCH_PREFIX)
    assert finalize_ready(runtime.sessions, runtime.store, [submission_id]) == [submission_id]
    return message_batch_id, str(submission_id)


def _cache_entry_of_a(runtime: Runtime, source_job_id: str) -> str:
    """An exact result cache entry of A's (written as a recorded batch fills one)."""
    entry_id = uuid.uuid4()
    with runtime.sessions() as session:
        tenant_id = session.execute(select(Tenant.id).where(Tenant.name == "acme")).scalar_one()
        session.add(ResultCacheEntry(
            id=entry_id, tenant_id=tenant_id, cache_key="0" * 64, model="test-model",
            model_identity="0" * 64, request=JOB, source_job_id=uuid.UUID(source_job_id),
            text="4", finish_reason="stop", prompt_tokens=10, cached_tokens=0,
            output_tokens=1, cost_usd=Decimal("0.0001"), list_cost_usd=Decimal("0.001"),
            expires_at=datetime.now(UTC) + timedelta(days=1)))
        session.commit()
    return str(entry_id)


def _objects_of_a(client: TestClient, runtime: Runtime) -> dict[str, str]:
    job = client.post("/v1/jobs", json=JOB, headers=A).json()
    bulk = client.post("/v1/jobs/bulk", json={"jobs": [JOB, JOB]}, headers=A).json()
    upload = client.post("/v1/files", headers=A, data={"purpose": "batch"},
                         files={"file": ("in.jsonl", jsonl([LINE]), "application/jsonl")})
    assert upload.status_code == 200, upload.text
    batch = client.post("/v1/batches", headers=A, json={
        "input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions",
        "completion_window": "24h"})
    assert batch.status_code == 200, batch.text
    message_batch = client.post("/v1/messages/batches", headers=A, json={"requests": [MESSAGE]})
    assert message_batch.status_code == 200, message_batch.text
    ended_batch, ended = _ended_message_batch_of_a(client, runtime)
    deliveries = client.get("/v1/webhooks/deliveries", headers=A).json()["data"]
    assert len(deliveries) == 1, deliveries
    cap = client.put("/v1/max-tokens-caps", headers=A,
                     json={"feature": "tagging", "max_tokens": 64})
    assert cap.status_code == 200, cap.text
    return {"cap_id": "tagging", "job_id": job["id"], "submission_id": job["submission_id"],
            "bulk_submission_id": bulk["submission_id"], "file_id": upload.json()["id"],
            "batch_id": batch.json()["id"], "message_batch_id": message_batch.json()["id"],
            "ended_message_batch_id": ended_batch, "ended_submission_id": ended,
            "delivery_id": deliveries[0]["id"],
            "cache_entry_id": _cache_entry_of_a(runtime, job["id"])}


# Every route that names an object, with the object of A's it is probed with. A route
# with an `{output}` is probed once per output.
PROBES: list[tuple[str, str, str]] = [
    ("GET", "/v1/jobs/{job_id}", "job_id"),
    ("GET", "/v1/submissions/{submission_id}", "submission_id"),
    ("GET", "/v1/submissions/{submission_id}/{output}", "ended_submission_id"),
    ("GET", "/v1/files/{file_id}", "file_id"),
    ("GET", "/v1/files/{file_id}/content", "file_id"),
    ("DELETE", "/v1/files/{file_id}", "file_id"),
    ("GET", "/v1/batches/{batch_id}", "batch_id"),
    ("POST", "/v1/batches/{batch_id}/cancel", "batch_id"),
    ("POST", "/v1/batches/{batch_id}/retry", "batch_id"),
    ("GET", "/v1/messages/batches/{message_batch_id}", "message_batch_id"),
    ("POST", "/v1/messages/batches/{message_batch_id}/cancel", "message_batch_id"),
    ("DELETE", "/v1/messages/batches/{message_batch_id}", "message_batch_id"),
    ("GET", "/v1/messages/batches/{message_batch_id}/results", "message_batch_id"),
    ("GET", "/v1/webhooks/deliveries/{delivery_id}", "delivery_id"),
    ("POST", "/v1/webhooks/deliveries/{delivery_id}/retry", "delivery_id"),
    ("GET", "/v1/cache/entries/{entry_id}", "cache_entry_id"),
    ("PATCH", "/v1/cache/entries/{entry_id}", "cache_entry_id"),
    ("DELETE", "/v1/cache/entries/{entry_id}", "cache_entry_id"),
    # This Postgres has no pgvector, so A has no semantic entry to probe with here: the
    # semantic cache's isolation is shown on pgvector in tests/e2e/test_semantic_cache.py.
    ("GET", "/v1/cache/semantic/entries/{entry_id}", "cache_entry_id"),
    ("DELETE", "/v1/cache/semantic/entries/{entry_id}", "cache_entry_id"),
    ("DELETE", "/v1/max-tokens-caps/{cap_id}", "cap_id"),
]
# Routes whose ids are not tenants' objects: the admin API has its own guard (tested in
# test_api_keys.py).
NOT_TENANT_SCOPED = {"/v1/admin/keys/{key_id}/revoke"}


def test_every_route_with_an_id_is_probed(client: TestClient) -> None:
    app = client.app
    routes = {(method, route.path) for route in app.routes  # type: ignore[attr-defined]
              if isinstance(route, APIRoute) and re.search(r"\{", route.path)
              for method in route.methods}
    probed = {(method, path) for method, path, _ in PROBES}
    assert {r for r in routes if r[1] not in NOT_TENANT_SCOPED} == probed


def _probe(client: TestClient, headers: dict[str, str], ids: dict[str, str]) -> dict[str, int]:
    answers = {}
    for method, path, name in PROBES:
        url = re.sub(r"\{\w+_id\}", ids[name], path)
        for output in OUTPUTS if "{output}" in url else (None,):
            concrete = url.replace("{output}", output) if output else url
            answers[f"{method} {concrete}"] = client.request(method, concrete,
                                                            headers=headers).status_code
    return answers


def _listings(client: TestClient, headers: dict[str, str]) -> dict[str, list[Any]]:
    return {
        "files": client.get("/v1/files", headers=headers).json()["data"],
        "batches": client.get("/v1/batches", headers=headers).json()["data"],
        "message_batches": client.get("/v1/messages/batches", headers=headers).json()["data"],
        "webhook_deliveries": client.get("/v1/webhooks/deliveries",
                                         headers=headers).json()["data"],
        "cache_entries": client.get("/v1/cache/entries", headers=headers).json()["data"],
    }


def test_another_tenants_objects_are_404_on_every_route(
    client: TestClient, runtime: Runtime
) -> None:
    ids = _objects_of_a(client, runtime)
    made = client.post("/v1/admin/keys", json={"tenant": "bolt"}, headers=ADMIN)
    b = {"Authorization": f"Bearer {made.json()['key']}"}
    for name in ("submission_id", "bulk_submission_id"):
        assert client.get(f"/v1/submissions/{ids[name]}", headers=b).status_code == 404

    as_b = _probe(client, b, ids)
    assert as_b == {probe: 404 for probe in as_b}

    listed_b = _listings(client, b)
    assert listed_b == {"files": [], "batches": [], "message_batches": [],
                        "webhook_deliveries": [], "cache_entries": []}
    assert client.get("/v1/cache/stats", headers=b).json()["entries"] == 0
    # A cursor naming A's object does not leak A's rows either.
    assert client.get(f"/v1/files?after={ids['file_id']}", headers=b).json()["data"] == []
    assert client.get(f"/v1/batches?after={ids['batch_id']}", headers=b).json()["data"] == []
    assert client.get(f"/v1/webhooks/deliveries?after={ids['delivery_id']}",
                      headers=b).json()["data"] == []
    for_a = {"submission_id": ids["ended_submission_id"]}
    assert client.get("/v1/webhooks/deliveries", params=for_a,
                      headers=b).json()["data"] == []
    # A's default endpoint is A's alone.
    assert client.get("/v1/webhooks/endpoint", headers=b).json()["url"] is None
    listed_a = _listings(client, A)
    assert [f["id"] for f in listed_a["files"]] == [ids["file_id"]]
    assert [x["id"] for x in listed_a["batches"]] == [ids["batch_id"]]
    assert {x["id"] for x in listed_a["message_batches"]} == {
        ids["message_batch_id"], ids["ended_message_batch_id"]}
    assert [x["id"] for x in listed_a["webhook_deliveries"]] == [ids["delivery_id"]]
    assert [x["id"] for x in listed_a["cache_entries"]] == [ids["cache_entry_id"]]
    assert client.get("/v1/webhooks/endpoint", headers=A).json()["url"] == HOOK

    # B cannot build on A's file.
    stolen = client.post("/v1/batches", headers=b, json={
        "input_file_id": ids["file_id"], "endpoint": "/v1/chat/completions",
        "completion_window": "24h"})
    assert stolen.status_code == 404
    assert stolen.json()["error"]["param"] == "input_file_id"

    # B's probes (deletes and cancels included) changed nothing: A still sees, and can act
    # on, everything (this deletes and cancels A's objects, so it goes last).
    as_a = _probe(client, A, ids)
    # (Semantic entries need pgvector, which this Postgres lacks: A has none to act on.)
    assert all(status != 404 for probe, status in as_a.items()
               if "/cache/semantic/" not in probe), as_a


def test_reads_with_unknown_or_missing_keys_create_nothing(
    client: TestClient, runtime: Runtime
) -> None:
    for headers in ({}, {"Authorization": "Bearer nobody"}, {"x-api-key": "pk_unknown"}):
        for path in ("/v1/files", "/v1/batches", "/v1/messages/batches",
                     "/v1/jobs/00000000-0000-0000-0000-000000000000",
                     "/v1/submissions/00000000-0000-0000-0000-000000000000/results",
                     "/v1/webhooks/deliveries", "/v1/webhooks/endpoint",
                     "/v1/cache/entries", "/v1/cache/stats"):
            response = client.get(path, headers=headers)
            assert response.status_code == 401
            assert "nobody" not in response.text and "pk_unknown" not in response.text
    assert _tenant_count(runtime) == 0


def test_reading_and_submitting_do_not_write_tenants(
    client: TestClient, runtime: Runtime
) -> None:
    made = client.post("/v1/admin/keys", json={"tenant": "bolt"}, headers=ADMIN).json()
    b = {"Authorization": f"Bearer {made['key']}"}
    assert _tenant_count(runtime) == 1  # made with its key
    for _ in range(3):
        assert client.get("/v1/files", headers=b).status_code == 200
        assert client.get("/v1/webhooks/deliveries", headers=b).status_code == 200
        assert client.get("/v1/webhooks/endpoint", headers=b).status_code == 200
        submitted = client.post("/v1/jobs", json=JOB, headers=b)
        assert submitted.status_code == 202
        assert client.get(f"/v1/submissions/{submitted.json()['submission_id']}",
                          headers=b).status_code == 200
    assert _tenant_count(runtime) == 1
