"""s3:// intake against a real S3 API over HTTP on loopback (moto's server mode) through
boto3: a CSV upload and an OpenAI file named by URL instead of sent, reads refused before
any request when outside the tenant's buckets and prefixes, outputs in S3 with presigned
links fetched over plain HTTP. The engine is replaced by scripted generations recorded
through the worker's own `record_batch`."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import boto3
import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from intake.limits import IntakeLimits
from intake.validation import validate_next_batch
from models.tables import Job
from penny.runtime import Runtime, open_runtime
from tests.integration.test_result_cache import run_queued
from tests.support import free_port, make_settings, reset_tables
from workers.finalize import finalize_ready

ACME = {"Authorization": "Bearer key-acme"}
GLOBEX = {"Authorization": "Bearer key-globex"}
CSV = b"custom_id,prompt\nr1,What is 2 + 2?\nr2,=cmd|' /C calc'!A0\n"
LINE = (b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", '
        b'"body": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}}\n')
NATIVE = (b'{"custom_id": "n1", "messages": [{"role": "user", "content": "2 + 2?"}]}\n'
          b'{"custom_id": "n2", "messages": [{"role": "user", "content": "hi"}]}\n')
TAGGED_CSV = b"custom_id,prompt,feature,max_tokens\nt1,Write an essay,essay,48\nt2,Hi,chat,48\n"
TAGGED_JSONL = (b'{"custom_id": "t1", "prompt": "Write an essay", "max_tokens": 48, '
                b'"metadata": {"feature": "essay"}}\n'
                b'{"custom_id": "t2", "prompt": "Hi", "max_tokens": 48, '
                b'"metadata": {"feature": "chat"}}\n')


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"AWS_ACCESS_KEY_ID": "testing",
                            "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": "us-east-1"}.items():
            patch.setenv(name, value)
        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        endpoint = f"http://127.0.0.1:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint)
        for bucket in ("acme-in", "globex-in", "penny-out"):
            s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket="acme-in", Key="batches/q1.csv", Body=CSV)
        s3.put_object(Bucket="acme-in", Key="batches/lines.jsonl", Body=LINE)
        s3.put_object(Bucket="acme-in", Key="batches/native.jsonl", Body=NATIVE)
        s3.put_object(Bucket="acme-in", Key="batches/tagged.csv", Body=TAGGED_CSV)
        s3.put_object(Bucket="acme-in", Key="batches/tagged.jsonl", Body=TAGGED_JSONL)
        s3.put_object(Bucket="acme-in", Key="private/native.jsonl", Body=NATIVE)
        s3.put_object(Bucket="acme-in", Key="batches/big.csv",
                      Body=b"prompt\n" + b"x" * 70_000 + b"\n")
        s3.put_object(Bucket="acme-in", Key="private/secret.csv", Body=CSV)
        s3.put_object(Bucket="acme-in", Key="batches-private/secret.csv", Body=CSV)
        s3.put_object(Bucket="globex-in", Key="theirs.csv", Body=CSV)
        try:
            yield endpoint
        finally:
            server.stop()


@pytest.fixture
def runtime(tmp_path: Path, database_url: str, s3_endpoint: str) -> Iterator[Runtime]:
    settings = make_settings(
        tmp_path, database_url, api_keys={"key-acme": "acme", "key-globex": "globex"},
        tenant_s3_sources={"acme": ["s3://acme-in/batches/"], "globex": ["s3://globex-in"]},
        s3_endpoint_url=s3_endpoint, object_store_url="s3://penny-out/runs",
        max_csv_upload_bytes=64 * 1024, presigned_url_seconds=600)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        runtime = open_runtime(settings)
        reset_tables(runtime)
        yield runtime
        runtime.close()


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime)) as client:
        yield client


@pytest.fixture
def s3_calls(client: TestClient) -> list[str]:
    """Every S3 operation the API's source reader sends, counted before it is sent."""
    from api.deps import s3_reader_of

    calls: list[str] = []
    app: Any = client.app
    request: Any = type("R", (), {"app": app})()
    reader = s3_reader_of(request)
    reader.client.meta.events.register(
        "before-call.s3", lambda model, **_: calls.append(model.name))
    return calls


def from_s3(client: TestClient, url: str, headers: dict[str, str] = ACME, **form: str
            ) -> Any:
    return client.post("/v1/uploads/csv", data={"source": url, **form}, headers=headers)


def test_a_csv_named_by_url_is_read_and_its_outputs_come_back_by_presigned_link(
    client: TestClient, runtime: Runtime, s3_calls: list[str],
) -> None:
    response = from_s3(client, "s3://acme-in/batches/q1.csv")
    assert response.status_code == 202, response.text
    assert response.json()["rows"] == 2
    assert s3_calls == ["HeadObject", "GetObject"]
    submission_id = response.json()["submission_id"]
    assert run_queued(runtime) == 2
    store: Any = runtime.store
    written: list[str] = []
    store.client.meta.events.register(
        "before-parameter-build.s3.PutObject", lambda params, **_: written.append(params["Key"]))
    finalize_ready(runtime.sessions, runtime.store)
    read = client.get(f"/v1/submissions/{submission_id}", headers=ACME).json()
    # Every object whole, the manifest last, listing them.
    assert written[-1] == f"runs/submissions/{submission_id}/manifest.json"
    manifest = json.loads(store.get(f"submissions/{submission_id}/manifest.json"))
    assert manifest["submission_id"] == submission_id
    assert manifest["outputs"] == read["outputs"]
    listed = {o["uri"]: o for o in manifest["objects"]}
    assert set(listed) == set(read["outputs"].values())
    assert [f"runs/{o['key']}" for o in manifest["objects"]] == written[:-1]
    for entry in manifest["objects"]:  # each listed object is there, whole
        data = store.get(entry["key"])
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["bytes"],
                                                                 entry["sha256"])
    prefix = f"s3://penny-out/runs/submissions/{submission_id}"
    assert read["outputs"]["results_csv"] == f"{prefix}/results.csv"
    links = read["output_urls"]
    assert set(links) == {"results", "ledger_json", "ledger_csv", "results_csv"}
    query = parse_qs(urlparse(links["results_csv"]).query)
    if "X-Amz-Expires" in query:  # signature version 4: the lifetime itself
        assert query["X-Amz-Expires"] == ["600"]
    else:  # version 2: the moment it ends, at most the configured 600 s from now
        assert 0 < int(query["Expires"][0]) - time.time() <= 600
    fetched = httpx.get(links["results_csv"], timeout=10)  # plain HTTP, no credentials
    assert fetched.status_code == 200
    rows = list(csv.DictReader(io.StringIO(fetched.text)))
    assert [r["custom_id"] for r in rows] == ["r1", "r2"]
    assert rows[1]["prompt"] == "'=cmd|' /C calc'!A0"  # formula neutralised
    assert rows[0]["output"] == "answer to What is 2 + 2?"


@pytest.mark.parametrize(
    ("headers", "url", "status"),
    [
        (ACME, "s3://acme-in/private/secret.csv", 403),  # another prefix
        (ACME, "s3://acme-in/batches-private/secret.csv", 403),  # a prefix is a folder
        (ACME, "s3://globex-in/theirs.csv", 403),  # another tenant's bucket
        (GLOBEX, "s3://acme-in/batches/q1.csv", 403),  # cross-tenant
        (ACME, "s3://acme-in/batches/../private/secret.csv", 422),
        (ACME, "https://acme-in.s3.amazonaws.com/batches/q1.csv", 422),
    ],
)
def test_reads_outside_the_tenants_locations_are_refused_before_any_request(
    client: TestClient, s3_calls: list[str], headers: dict[str, str], url: str, status: int,
) -> None:
    response = from_s3(client, url, headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == "source"
    if status == 403:
        assert error["code"] == "source_not_allowed"
    assert s3_calls == []  # not even a HEAD
    filed = client.post("/v1/files", data={"source": url, "purpose": "batch"}, headers=headers)
    assert filed.status_code == status, filed.text
    assert s3_calls == []


def test_a_native_jsonl_named_by_url_is_streamed_into_jobs(
    client: TestClient, runtime: Runtime, s3_calls: list[str],
) -> None:
    response = client.post("/v1/uploads/jsonl", data={"source": "s3://acme-in/batches/"
                                                                "native.jsonl"},
                           headers={**ACME, "Idempotency-Key": "native-1"})
    assert response.status_code == 202, response.text
    assert response.json()["rows"] == 2
    assert s3_calls == ["HeadObject", "GetObject"]
    again = client.post("/v1/uploads/jsonl", data={"source": "s3://acme-in/batches/"
                                                             "native.jsonl"},
                        headers={**ACME, "Idempotency-Key": "native-1"})
    assert again.status_code == 200  # a replay: same object, same key
    assert again.json()["submission_id"] == response.json()["submission_id"]
    assert s3_calls == ["HeadObject", "GetObject"] * 2
    assert run_queued(runtime) == 2
    for headers, url in ((ACME, "s3://acme-in/private/native.jsonl"),
                         (GLOBEX, "s3://acme-in/batches/native.jsonl")):
        refused = client.post("/v1/uploads/jsonl", data={"source": url}, headers=headers)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "source_not_allowed"
    assert s3_calls == ["HeadObject", "GetObject"] * 2  # not even a HEAD


def test_a_missing_object_in_an_allowed_folder_is_a_404(client: TestClient) -> None:
    response = from_s3(client, "s3://acme-in/batches/nope.csv")
    assert response.status_code == 404, response.text
    assert response.json()["error"]["param"] == "source"


def test_an_object_over_the_limit_is_a_413_before_it_is_read(
    client: TestClient, s3_calls: list[str],
) -> None:
    response = from_s3(client, "s3://acme-in/batches/big.csv")
    assert response.status_code == 413, response.text
    assert s3_calls == ["HeadObject"]


def test_file_and_source_together_or_neither_are_refused(client: TestClient) -> None:
    both = client.post("/v1/uploads/csv", data={"source": "s3://acme-in/batches/q1.csv"},
                       files={"file": ("in.csv", CSV, "text/csv")}, headers=ACME)
    neither = client.post("/v1/uploads/csv", data={"template": "{prompt}"}, headers=ACME)
    for response in (both, neither):
        assert response.status_code == 422, response.text
        assert "exactly one" in response.json()["error"]["message"]


def test_the_same_object_under_the_same_key_is_a_replay(client: TestClient) -> None:
    key = {**ACME, "Idempotency-Key": "s3-1"}
    first = from_s3(client, "s3://acme-in/batches/q1.csv", key)
    again = from_s3(client, "s3://acme-in/batches/q1.csv", key)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["submission_id"] == first.json()["submission_id"]


def test_an_openai_file_registered_from_s3_runs_as_a_batch(client: TestClient,
                                                           runtime: Runtime) -> None:
    filed = client.post("/v1/files", headers=ACME,
                        data={"source": "s3://acme-in/batches/lines.jsonl", "purpose": "batch"})
    assert filed.status_code == 200, filed.text
    assert filed.json()["filename"] == "lines.jsonl"
    assert client.get(f"/v1/files/{filed.json()['id']}/content",
                      headers=ACME).content == LINE
    batch = client.post("/v1/batches", headers=ACME, json={
        "input_file_id": filed.json()["id"], "endpoint": "/v1/chat/completions",
        "completion_window": "24h"})
    assert batch.status_code == 200, batch.text
    # Validated, run and finalized: the manifest lists the batch's output file too.
    limits = IntakeLimits.from_settings(runtime.settings)
    while validate_next_batch(runtime.sessions, runtime.store, limits,
                              runtime.settings.max_batch_requests):
        pass
    assert run_queued(runtime) == 1
    finalize_ready(runtime.sessions, runtime.store)
    ended = client.get(f"/v1/batches/{batch.json()['id']}", headers=ACME).json()
    assert ended["status"] == "completed", ended
    store: Any = runtime.store
    submission = uuid.UUID(ended["id"].removeprefix("batch_"))
    manifest = json.loads(store.get(f"submissions/{submission}/manifest.json"))
    keys = [o["key"] for o in manifest["objects"]]
    assert f"files/{ended['output_file_id']}" in keys
    for entry in manifest["objects"]:
        data = store.get(entry["key"])
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["bytes"],
                                                                 entry["sha256"])


def test_files_named_by_url_take_the_tenants_max_tokens_caps(
    client: TestClient, runtime: Runtime,
) -> None:
    cap = client.put("/v1/max-tokens-caps", headers=ACME,
                     json={"feature": "essay", "max_tokens": 4})
    assert cap.status_code == 200, cap.text
    csv_upload = from_s3(client, "s3://acme-in/batches/tagged.csv")
    jsonl_upload = client.post("/v1/uploads/jsonl", headers=ACME,
                               data={"source": "s3://acme-in/batches/tagged.jsonl"})
    for response in (csv_upload, jsonl_upload):
        assert response.status_code == 202, response.text
        with runtime.sessions() as session:
            stored = dict(session.execute(select(Job.custom_id, Job.request).where(
                Job.submission_id == uuid.UUID(response.json()["submission_id"]))).all())
        assert stored["t1"]["sampling"]["max_tokens"] == 4
        assert stored["t1"]["sampling"]["requested_max_tokens"] == 48
        assert stored["t2"]["sampling"]["max_tokens"] == 48
        assert "requested_max_tokens" not in stored["t2"]["sampling"]
