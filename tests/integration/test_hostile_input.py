"""Hostile input through the real interfaces (HTTP, the batch APIs) against real Postgres:
text Postgres cannot store, unreadable bodies and coerced types each get a precise 4xx or a
per-line error naming the field, never a 500, and good input next to them still goes in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from coalescer.runner import Coalescer
from models.tables import Job, Submission
from penny.runtime import Runtime, open_runtime
from tests.support import free_port, jsonl, make_settings, reset_tables
from workers.inprocess import LocalDispatcher

MODEL = "smollm2-135m-instruct"
GOOD = {"messages": [{"role": "user", "content": "What is 2 + 2?"}], "max_tokens": 8}
NUL, SURROGATE = "\u0000", "\ud800"


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    # raise_server_exceptions=False: a server error must show up as the 500 a client sees.
    with TestClient(create_app(runtime), raise_server_exceptions=False) as client:
        yield client


def post_json(client: TestClient, path: str, body: Any) -> Any:
    """Send `body` as JSON written the way a client's encoder writes it (\\u escapes)."""
    return client.post(path, content=json.dumps(body).encode(),
                       headers={"content-type": "application/json"})


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def rows(runtime: Runtime) -> tuple[int, int]:
    with runtime.sessions() as session:
        return (session.execute(select(func.count()).select_from(Job)).scalar_one(),
                session.execute(select(func.count()).select_from(Submission)).scalar_one())


def with_text(bad: str) -> list[tuple[dict[str, Any], str]]:
    """A job body with `bad` in each place a job stores text, and the param it must name."""
    return [
        ({**GOOD, "messages": [{"role": "user", "content": f"hi{bad}"}]}, "messages.0.content"),
        ({"prompt": f"say {bad}", "max_tokens": 8}, "prompt"),
        ({**GOOD, "custom_id": f"id{bad}"}, "custom_id"),
        ({**GOOD, "stop": ["ok", bad]}, "stop.1"),
        ({**GOOD, "model": f"m{bad}"}, "model"),
        ({**GOOD, "metadata": {"team": f"a{bad}"}}, "metadata"),
        ({**GOOD, "metadata": {"deep": {"list": ["fine", bad]}}}, "metadata"),
    ]


@pytest.mark.parametrize(("body", "param"), with_text(NUL) + with_text(SURROGATE))
def test_unstorable_text_in_a_job_is_a_422_naming_the_field(
    client: TestClient, runtime: Runtime, body: dict[str, Any], param: str
) -> None:
    response = post_json(client, "/v1/jobs", body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert "cannot be stored" in error["message"] or "not valid Unicode" in error["message"]
    assert rows(runtime) == (0, 0)


def test_unstorable_metadata_key_is_named(client: TestClient, runtime: Runtime) -> None:
    response = post_json(client, "/v1/jobs", {**GOOD, "metadata": {f"k{NUL}": 1}})
    assert response.status_code == 422
    assert response.json()["error"]["param"].startswith("metadata.k\\u0000")
    # A field name holding a lone surrogate (pydantic refuses the whole object then, as
    # not unicode): still a 422 whose answer encodes, not a 500.
    response = post_json(client, "/v1/jobs", {**GOOD, f"x{SURROGATE}": 1})
    assert response.status_code == 422
    assert "unicode" in response.json()["error"]["message"]
    assert rows(runtime) == (0, 0)


def test_a_bulk_422_names_every_bad_item_whatever_made_it_bad(
    client: TestClient, runtime: Runtime
) -> None:
    jobs = [GOOD,
            {**GOOD, "custom_id": f"a{NUL}"},        # unstorable text (schema stage)
            {**GOOD, "model": "gpt-17"},             # unknown model (deployment stage)
            {**GOOD, "max_tokens": "8"},             # a string for a number (schema stage)
            GOOD,
            {**GOOD, "max_tokens": 999_999}]         # over the limit (deployment stage)
    response = post_json(client, "/v1/jobs/bulk", {"jobs": jobs})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert [(d["index"], d["code"], d["param"]) for d in error["details"]] == [
        (1, "invalid_request", "jobs.1.custom_id"),
        (2, "model_not_found", "jobs.2.model"),
        (3, "invalid_request", "jobs.3.max_tokens"),
        (5, "invalid_request", "jobs.5.max_tokens"),
    ]
    assert error["message"].startswith("4 of 6 jobs are invalid")
    assert rows(runtime) == (0, 0)
    accepted = post_json(client, "/v1/jobs/bulk", {"jobs": [GOOD, GOOD]})
    assert accepted.status_code == 202 and rows(runtime) == (2, 1)


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_tokens", "8"), ("max_tokens", True), ("max_tokens", 8.0), ("seed", "1"),
     ("priority", False), ("temperature", True), ("temperature", "0.5"), ("top_p", "1")],
)
def test_numbers_and_booleans_are_not_coerced(
    client: TestClient, runtime: Runtime, field: str, value: Any
) -> None:
    response = post_json(client, "/v1/jobs", {**GOOD, field: value})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == field
    assert rows(runtime) == (0, 0)


def test_an_integer_temperature_is_still_a_number(client: TestClient) -> None:
    assert post_json(client, "/v1/jobs", {**GOOD, "temperature": 1}).status_code == 202


@pytest.mark.parametrize(
    ("body", "param"),
    [({"messages": [{"role": "user", "content": " \n\t "}]}, "messages.0.content"),
     ({"prompt": "   "}, "prompt")],
)
def test_whitespace_only_prompts_are_refused(
    client: TestClient, runtime: Runtime, body: dict[str, Any], param: str
) -> None:
    response = post_json(client, "/v1/jobs", body)
    assert response.status_code == 422
    assert response.json()["error"]["param"] == param
    assert rows(runtime) == (0, 0)


@pytest.mark.parametrize(
    ("content", "says"),
    [(b"[" * 10_000 + b"]" * 10_000, "deeper than 64 levels"),
     (json.dumps({**GOOD, "metadata": {"a": nested(70)}}).encode(),
      "deeper than 64 levels"),
     (b'{"prompt": "caf\xe9", "max_tokens": 8}', "not UTF-8 text: byte 0xe9 at offset 15"),
     (b'{"prompt": "hi", "max_tokens": 8, "temperature": NaN}', "NaN is not a JSON value"),
     (b'{"prompt": "hi",}', "not valid JSON: Expecting property name enclosed in double "
                          "quotes at line 1 column 17")],
)
def test_unreadable_bodies_get_a_400_saying_what_is_wrong(
    client: TestClient, runtime: Runtime, content: bytes, says: str
) -> None:
    for path in ("/v1/jobs", "/v1/jobs/bulk", "/v1/messages/batches"):
        response = client.post(path, content=content,
                               headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_json"
        assert says in error["message"]
    assert rows(runtime) == (0, 0)


def test_max_tokens_beyond_the_context_window_is_refused_at_intake(
    client: TestClient, runtime: Runtime
) -> None:
    context = runtime.settings.engine_max_model_len
    assert runtime.settings.max_output_tokens > context  # the context is the tighter limit
    response = post_json(client, "/v1/jobs", {**GOOD, "max_tokens": context})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["param"] == "max_tokens"
    assert f"context window of {context} tokens" in error["message"]
    assert post_json(client, "/v1/jobs", {**GOOD, "max_tokens": context - 1}).status_code == 202


def test_anthropic_create_names_every_request_with_unstorable_text(
    client: TestClient, runtime: Runtime
) -> None:
    def request(custom_id: str, content: str, **params: Any) -> dict[str, Any]:
        return {"custom_id": custom_id, "params": {
            "model": MODEL, "max_tokens": 8,
            "messages": [{"role": "user", "content": content}], **params}}

    body = {"requests": [request("ok", "hi"), request("bad1", f"hi{NUL}"),
                         request("bad2", "hi", metadata={"user_id": SURROGATE})]}
    response = post_json(client, "/v1/messages/batches", body)
    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    assert [(d["index"], d["param"]) for d in details] == [
        (1, "requests.1.params.messages.0.content"),
        (2, "requests.2.params.metadata.user_id")]
    assert rows(runtime) == (0, 0)


def test_openai_batch_create_refuses_unstorable_metadata(
    client: TestClient, runtime: Runtime
) -> None:
    upload = client.post("/v1/files", data={"purpose": "batch"},
                         files={"file": ("in.jsonl", jsonl([{"custom_id": "a"}]))})
    assert upload.status_code == 200
    # (pydantic reports a key holding a lone surrogate with U+FFFD in its place)
    for metadata, param in (({"k": f"v{NUL}"}, "metadata.k"),
                            ({f"k{SURROGATE}": "v"}, "metadata.k\ufffd\ufffd\ufffd.[key]")):
        response = post_json(client, "/v1/batches", {
            "input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions",
            "completion_window": "24h", "metadata": metadata})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["param"] == param
    assert rows(runtime) == (0, 0)


def test_file_ids_that_cannot_be_stored_are_just_not_found(client: TestClient) -> None:
    for path in ("/v1/files/file-%00", "/v1/files/file-%00/content"):
        assert client.get(path).status_code == 404
    assert client.delete("/v1/files/file-%00").status_code == 404
    assert client.get("/v1/files", params={"after": "file-\x00"}).status_code == 200
    assert client.get("/v1/files", params={"purpose": "batch\x00"}).status_code == 422


def test_batch_file_lines_with_unstorable_text_fail_the_batch_naming_each_line(
    client: TestClient, runtime: Runtime
) -> None:
    def line(custom_id: str, content: str) -> dict[str, Any]:
        return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": MODEL, "max_tokens": 8,
                         "messages": [{"role": "user", "content": content}]}}

    lines: list[Any] = [line("a", "hi"), line("b", f"hi{NUL}"), line(f"c{SURROGATE}", "hi"),
                        {**line("d", "hi"), "body": {**line("d", "hi")["body"],
                                                     f"x{NUL}": 1}},
                        line("e", "hi") | {"body": {**line("e", "hi")["body"],
                                                    "max_tokens": "8"}},
                        "[" * 10_000 + "]" * 10_000]
    upload = client.post("/v1/files", data={"purpose": "batch"},
                         files={"file": ("in.jsonl", jsonl(lines))})
    created = post_json(client, "/v1/batches", {
        "input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions",
        "completion_window": "24h"})
    assert created.status_code == 200, created.text
    coalescer = Coalescer(runtime.settings, runtime.sessions, LocalDispatcher([MODEL]),
                          runtime.store, [MODEL])
    assert coalescer.validate()
    batch = client.get(f"/v1/batches/{created.json()['id']}").json()
    assert batch["status"] == "failed"
    found = [(e["line"], e["code"], e["param"]) for e in batch["errors"]["data"]]
    assert found == [
        (2, "invalid_request", "body.messages.0.content"),
        (3, "invalid_request", "custom_id"),
        (4, "invalid_request", "body.x\\u0000"),
        (5, "invalid_request", "body.max_tokens"),
        (6, "invalid_json_line", None),
    ]
    assert "deeper than 64 levels" in batch["errors"]["data"][-1]["message"]
    assert rows(runtime) == (0, 1)  # the batch, and no job: a bad line fails it whole


CSV = b"custom_id,prompt\nr1,What is 2 + 2?\n"


@pytest.mark.parametrize(
    ("encoding", "says"),
    [("rot13", "'rot13' is not a text encoding"),  # str-to-str codecs: no text from bytes
     ("base64", "'base64' is not a text encoding"),  # bytes-to-bytes
     ("zlib", "'zlib' is not a text encoding"),
     ("utf-16", "in.csv is not utf-16 text (line 1)"),  # no BOM: the codec's own error
     ("punycode", "in.csv is not punycode text (line 1)")],
)
def test_csv_encodings_that_yield_no_text_are_a_422_naming_the_encoding(
    client: TestClient, runtime: Runtime, encoding: str, says: str
) -> None:
    response = client.post("/v1/uploads/csv", files={"file": ("in.csv", CSV, "text/csv")},
                           data={"encoding": encoding})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["param"], error["message"]) == ("encoding", says)
    assert rows(runtime) == (0, 0)


def test_a_form_field_sent_twice_is_a_422_not_a_silently_dropped_file(
    client: TestClient, runtime: Runtime
) -> None:
    other = b"prompt\nSay hi\n"
    csv_twice = client.post("/v1/uploads/csv", files=[
        ("file", ("a.csv", CSV, "text/csv")), ("file", ("b.csv", other, "text/csv"))])
    template_twice = client.post("/v1/uploads/csv", files={"file": ("in.csv", CSV, "text/csv")},
                                 data={"template": ["{prompt}", "Say: {prompt}"]})
    jsonl_twice = client.post("/v1/files", data={"purpose": "batch"}, files=[
        ("file", ("a.jsonl", b"{}\n", "application/jsonl")),
        ("file", ("b.jsonl", b"{}\n", "application/jsonl"))])
    for response, field in ((csv_twice, "file"), (template_twice, "template"),
                            (jsonl_twice, "file")):
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["param"] == field
        assert error["message"] == f"each form field is sent once; sent more than once: {field}"
    assert rows(runtime) == (0, 0)
    assert client.get("/v1/files").json()["data"] == []
    # One of each still goes through.
    single = client.post("/v1/uploads/csv", files={"file": ("in.csv", CSV, "text/csv")})
    assert single.status_code == 202, single.text


def test_a_cache_correction_must_be_storable_text_and_nothing_else(
    client: TestClient,
) -> None:
    entry = "/v1/cache/entries/00000000-0000-0000-0000-000000000000"
    for body, param, says in (
        ({"text": f"Paris{NUL}"}, "text", "contains a NUL character"),
        ({"text": f"Paris{SURROGATE}"}, "text", "unable to parse raw data as a unicode string"),
        ({"text": "Paris", "answer": "Lyon"}, "answer", "Extra inputs are not permitted"),
    ):
        response = client.patch(entry, content=json.dumps(body).encode(),
                                headers={"content-type": "application/json"})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["param"] == param and says in error["message"]
    # A storable correction of an entry that does not exist is still just not found.
    assert client.patch(entry, json={"text": "Paris"}).status_code == 404


def test_a_webhook_url_with_no_tcp_port_is_refused(client: TestClient) -> None:
    for port in ("0", "65536", "99999"):
        response = client.put("/v1/webhooks/endpoint",
                              json={"url": f"https://example.com:{port}/hook"})
        assert response.status_code == 422, response.text
        assert f"port {port} is not a TCP port" in response.json()["error"]["message"]
    assert client.get("/v1/webhooks/endpoint").json()["url"] is None


def test_an_object_store_that_does_not_answer_is_a_503_not_a_500(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_MAX_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(name, value)
    # Nothing listens on the endpoint's port: the connection is refused.
    settings = make_settings(tmp_path, database_url, api_keys={"key-acme": "acme"},
                             tenant_s3_sources={"acme": ["s3://acme-in/batches"]},
                             s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
    runtime = open_runtime(settings)
    reset_tables(runtime)
    try:
        with TestClient(create_app(runtime), raise_server_exceptions=False) as acme:
            acme.headers["Authorization"] = "Bearer key-acme"
            source = "s3://acme-in/batches/q1.csv"
            for path, form in (("/v1/uploads/csv", {"source": source}),
                               ("/v1/uploads/jsonl", {"source": source}),
                               ("/v1/files", {"source": source, "purpose": "batch"})):
                response = acme.post(path, data=form)
                assert response.status_code == 503, response.text
                error = response.json()["error"]
                assert (error["code"], error["param"]) == ("source_unavailable", "source")
                assert "EndpointConnectionError" in error["message"]
            assert rows(runtime) == (0, 0)
    finally:
        runtime.close()
