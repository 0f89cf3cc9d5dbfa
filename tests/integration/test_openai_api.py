"""The OpenAI-compatible Files and Batch APIs through the real `openai` SDK against a real
uvicorn server and Postgres. Nothing here needs the engine: validation (run by the
coalescer, off the request), pagination, and batches that end without running (cancelled
or expired before any line started)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import func, select

from api.app import create_app
from coalescer.runner import Coalescer
from intake.limits import IntakeLimits
from intake.validation import Outcome, RetryPolicy, Validated, validate_next_batch
from models.batches import claim_validating_batch
from models.files import object_key_for
from models.tables import Job, LedgerEntry, Submission
from penny.runtime import Runtime, open_runtime
from tests.support import LiveServer, jsonl, make_settings
from workers.finalize import finalize_ready
from workers.inprocess import LocalDispatcher
from workers.sweeper import sweep

MODEL = "smollm2-135m-instruct"
EMBEDDING_MODEL = "all-MiniLM-L6-v2"


def chat_line(custom_id: str, content: str = "Say hi.", **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": content}],
                     "max_tokens": 8, **body}}


def embedding_line(custom_id: str, text: Any = "Say hi.", **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings",
            "body": {"model": EMBEDDING_MODEL, "input": text, **body}}


@pytest.fixture
def client(runtime: Runtime) -> Iterator[openai.OpenAI]:
    with LiveServer(create_app(runtime)) as server:
        yield openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def upload(client: openai.OpenAI, lines: list[Any], name: str = "in.jsonl") -> str:
    return client.files.create(file=(name, jsonl(lines)), purpose="batch").id


def coalescer_of(runtime: Runtime) -> Coalescer:
    """The coalescer as `penny run` or `penny coalescer` builds it, minus the engine."""
    return Coalescer(runtime.settings, runtime.sessions, LocalDispatcher([MODEL]),
                     runtime.store, [MODEL])


def validate_waiting(runtime: Runtime) -> int:
    """What the coalescer does at the start of its ticks, until no batch is validating."""
    coalescer, validated = coalescer_of(runtime), 0
    while coalescer.validate():
        validated += 1
    return validated


def job_count(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        return int(session.execute(select(func.count()).select_from(Job)).scalar_one())


def create_chat_batch(client: openai.OpenAI, lines: int, **extra: Any) -> Any:
    return client.batches.create(
        input_file_id=upload(client, [chat_line(f"c{i}") for i in range(lines)]),
        endpoint="/v1/chat/completions", completion_window="24h", **extra)


def test_create_answers_validating_and_the_coalescer_queues_the_lines(
    client: openai.OpenAI, runtime: Runtime
) -> None:
    batch = create_chat_batch(client, 3, extra_headers={"Idempotency-Key": "k-1"})
    assert batch.status == "validating" and batch.in_progress_at is None
    assert batch.request_counts is not None and batch.request_counts.total == 0
    assert job_count(runtime) == 0  # the request parsed nothing and queued nothing
    replay = client.batches.with_raw_response.create(
        input_file_id=batch.input_file_id, endpoint="/v1/chat/completions",
        completion_window="24h", extra_headers={"Idempotency-Key": "k-1"})
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.parse().id == batch.id
    assert client.batches.retrieve(batch.id).status == "validating"

    coalescer = coalescer_of(runtime)
    coalescer.tick()  # no engine is up: the tick validates, and dispatches nothing
    assert coalescer.stats.batches_validated == 1
    started = client.batches.retrieve(batch.id)
    assert started.status == "in_progress" and started.in_progress_at is not None
    assert started.request_counts is not None and started.request_counts.total == 3
    with runtime.sessions() as session:
        jobs = session.execute(select(Job.custom_id, Job.status, Job.deadline_at)
                               .order_by(Job.line_no)).all()
    assert [(j.custom_id, j.status) for j in jobs] == [
        ("c0", "queued"), ("c1", "queued"), ("c2", "queued")]
    # The window counts from the batch's creation, not from its validation.
    assert all(j.deadline_at is not None
               and abs(j.deadline_at.timestamp() - (started.expires_at or 0)) < 2 for j in jobs)
    assert validate_waiting(runtime) == 0  # validated once, never again


def test_the_batch_metadata_tags_each_of_its_jobs(client: openai.OpenAI, runtime: Runtime
                                                ) -> None:
    """So reports by feature and the max_tokens audit see batch files too."""
    tagged = create_chat_batch(client, 2, metadata={"feature": "tickets", "team": "support"})
    plain = create_chat_batch(client, 1)
    assert validate_waiting(runtime) == 2
    with runtime.sessions() as session:
        tags = {f"batch_{submission.hex}": jobs_tags for submission, jobs_tags in
                session.execute(select(Job.submission_id, func.array_agg(Job.tags))
                                .group_by(Job.submission_id)).all()}
    assert tags[tagged.id] == [{"feature": "tickets", "team": "support"}] * 2
    assert tags[plain.id] == [{}]


def test_cancel_while_validating_queues_nothing(client: openai.OpenAI, runtime: Runtime
                                                ) -> None:
    batch = create_chat_batch(client, 4)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    assert validate_waiting(runtime) == 1  # the coalescer ends it instead of parsing it
    ended = client.batches.retrieve(batch.id)
    assert ended.status == "cancelled" and ended.cancelled_at is not None
    assert ended.in_progress_at is None
    assert (ended.output_file_id, ended.error_file_id) == (None, None)
    assert ended.request_counts is not None and ended.request_counts.total == 0
    assert job_count(runtime) == 0
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)
    with pytest.raises(openai.ConflictError):  # nothing failed, so nothing to retry
        client.post(f"/batches/{batch.id}/retry", cast_to=openai.types.Batch)


def test_an_input_file_deleted_before_validation_fails_the_batch(
    client: openai.OpenAI, runtime: Runtime
) -> None:
    batch = create_chat_batch(client, 2)
    client.files.delete(batch.input_file_id)
    assert validate_waiting(runtime) == 1
    failed = client.batches.retrieve(batch.id)
    assert failed.status == "failed" and failed.errors is not None
    assert [(e.line, e.code, e.param) for e in failed.errors.data or []] == [
        (None, "file_not_found", "input_file_id")]
    assert job_count(runtime) == 0


def test_a_batch_held_by_one_validator_is_skipped_by_another(
    client: openai.OpenAI, runtime: Runtime
) -> None:
    batch = create_chat_batch(client, 5)
    limits = IntakeLimits.from_settings(runtime.settings)
    max_requests = runtime.settings.max_batch_requests
    with runtime.sessions() as holder:
        held = claim_validating_batch(holder)  # as a validator mid-parse holds it
        assert held is not None and held.id.hex == batch.id.removeprefix("batch_")
        assert validate_next_batch(runtime.sessions, runtime.store, limits,
                                   max_requests, None) is None
        holder.rollback()  # that validator died: its claim is released, nothing was written
    validated = validate_next_batch(runtime.sessions, runtime.store, limits, max_requests, None)
    assert validated is not None and validated.outcome == Outcome.QUEUED
    assert validated.jobs == 5 and job_count(runtime) == 5
    assert validate_next_batch(runtime.sessions, runtime.store, limits, max_requests,
                               None) is None


def test_two_concurrent_validators_never_queue_a_batch_twice(
    client: openai.OpenAI, runtime: Runtime
) -> None:
    lines = {create_chat_batch(client, n).id.removeprefix("batch_"): n for n in (3, 5, 7, 9)}
    limits = IntakeLimits.from_settings(runtime.settings)
    start = threading.Barrier(2)
    done: list[Validated] = []

    def validator() -> None:
        start.wait()
        while (validated := validate_next_batch(runtime.sessions, runtime.store, limits,
                                                runtime.settings.max_batch_requests, None)):
            done.append(validated)

    threads = [threading.Thread(target=validator) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(v.batch_id.hex for v in done) == sorted(lines)
    assert all(v.outcome == Outcome.QUEUED for v in done)
    with runtime.sessions() as session:
        per_batch = session.execute(select(Job.submission_id, func.count())
                                    .group_by(Job.submission_id)).all()
    assert {batch.hex: n for batch, n in per_batch} == lines


def test_files_round_trip(client: openai.OpenAI) -> None:
    data = jsonl([chat_line("a"), chat_line("b")])
    created = client.files.create(file=("input.jsonl", data), purpose="batch",
                                  expires_after={"anchor": "created_at", "seconds": 7200})
    assert created.object == "file" and created.purpose == "batch"
    assert created.bytes == len(data) and created.filename == "input.jsonl"
    assert created.expires_at is not None
    assert created.expires_at - created.created_at == 7200
    assert client.files.retrieve(created.id).id == created.id
    assert client.files.content(created.id).read() == data
    assert [f.id for f in client.files.list()] == [created.id]
    deleted = client.files.delete(created.id)
    assert deleted.deleted is True and deleted.id == created.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(created.id)


def test_upload_rejects_other_purposes(client: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as error:
        client.files.create(file=("x.jsonl", b"{}\n"), purpose="fine-tune")
    assert "purpose" in str(error.value)


def test_file_list_pages_with_after_and_limit(client: openai.OpenAI) -> None:
    ids = [upload(client, [chat_line(f"x{i}")], name=f"f{i}.jsonl") for i in range(5)]
    first = client.files.list(limit=2)
    assert len(first.data) == 2 and first.has_more is True
    # The SDK follows `after` = last id of each page until has_more is false.
    assert [f.id for f in client.files.list(limit=2)] == list(reversed(ids))
    assert [f.id for f in client.files.list(limit=2, order="asc")] == ids


def test_models_are_listed(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models] == [EMBEDDING_MODEL, MODEL]
    assert all(m.object == "model" and m.owned_by == "penny" for m in models.data)


def test_bad_lines_fail_the_batch_naming_each_line(client: openai.OpenAI, runtime: Runtime
                                                   ) -> None:
    lines: list[Any] = [
        chat_line("ok-1"),
        "{not json",
        chat_line("ok-1"),  # duplicate custom_id
        {k: v for k, v in chat_line("x").items() if k != "custom_id"},
        {**chat_line("get"), "method": "GET"},
        {**chat_line("url"), "url": "/v1/fine_tuning/jobs"},
        chat_line("model", model="gpt-17"),
        {**chat_line("mixed"), "url": "/v1/completions"},
        chat_line("temp", temperature=7),
        chat_line("tools", tools=[{"type": "function", "function": {"name": "f"}}],
                  tool_choice="required"),
        chat_line("ok-2"),
    ]
    created = client.batches.create(input_file_id=upload(client, lines),
                                    endpoint="/v1/chat/completions", completion_window="24h")
    assert created.status == "validating" and created.errors is None
    assert validate_waiting(runtime) == 1
    batch = client.batches.retrieve(created.id)
    assert batch.status == "failed"
    assert batch.failed_at is not None and batch.in_progress_at is None
    assert batch.errors is not None and batch.errors.data is not None
    found = [(e.line, e.code, e.param) for e in batch.errors.data]
    assert found == [
        (2, "invalid_json_line", None),
        (3, "duplicate_custom_id", "custom_id"),
        (4, "missing_required_parameter", "custom_id"),
        (5, "invalid_method", "method"),
        (6, "invalid_url", "url"),
        (7, "model_not_found", "body.model"),
        (8, "mismatched_endpoint", "url"),
        (9, "invalid_request", "body.temperature"),
        (10, "unsupported_parameter", "body.tool_choice"),
    ]
    assert all(e.message for e in batch.errors.data)
    assert batch.request_counts is not None and batch.request_counts.total == 0
    assert job_count(runtime) == 0  # nothing runs
    assert validate_waiting(runtime) == 0 and client.batches.retrieve(batch.id).status == "failed"


def test_bad_embedding_lines_fail_the_batch_naming_each_line(
    client: openai.OpenAI, runtime: Runtime
) -> None:
    lines: list[Any] = [
        embedding_line("ok-1", ["one", "two"]),
        embedding_line("empty", ""),
        embedding_line("tokens", [[101, 2023], [102]]),
        embedding_line("dims", dimensions=1536),
        embedding_line("format", encoding_format="int8"),
        embedding_line("chat-model", model=MODEL),
        embedding_line("not-text", ["fine", {"text": "no"}]),
        chat_line("mixed"),
        embedding_line("ok-2", encoding_format="base64", dimensions=384, user="u-7"),
    ]
    created = client.batches.create(input_file_id=upload(client, lines),
                                    endpoint="/v1/embeddings", completion_window="24h")
    assert created.status == "validating"
    assert validate_waiting(runtime) == 1
    batch = client.batches.retrieve(created.id)
    assert batch.status == "failed" and batch.endpoint == "/v1/embeddings"
    assert batch.errors is not None and batch.errors.data is not None
    assert [(e.line, e.code, e.param) for e in batch.errors.data] == [
        (2, "invalid_request", "body.input"),
        (3, "unsupported_parameter", "body.input"),
        (4, "unsupported_parameter", "body.dimensions"),
        (5, "unsupported_parameter", "body.encoding_format"),
        (6, "model_not_found", "body.model"),
        (7, "invalid_request", "body.input.1"),
        (8, "mismatched_endpoint", "url"),
    ]
    assert all(e.message for e in batch.errors.data)
    assert job_count(runtime) == 0  # nothing runs


def test_a_good_embeddings_file_is_queued_for_the_embedding_model(
    client: openai.OpenAI, runtime: Runtime
) -> None:
    lines = [embedding_line("a", ["x", "y"]), embedding_line("b", encoding_format="base64")]
    created = client.batches.create(input_file_id=upload(client, lines),
                                    endpoint="/v1/embeddings", completion_window="1h")
    assert created.status == "validating" and created.model is None
    assert validate_waiting(runtime) == 1
    batch = client.batches.retrieve(created.id)
    assert batch.status == "in_progress" and batch.model == EMBEDDING_MODEL
    assert batch.request_counts is not None and batch.request_counts.total == 2
    with runtime.sessions() as session:
        jobs = session.execute(select(Job.custom_id, Job.model, Job.request, Job.status)
                               .order_by(Job.line_no)).all()
    assert [tuple(job) for job in jobs] == [
        ("a", EMBEDDING_MODEL, {"input": ["x", "y"], "encoding_format": "float"}, "queued"),
        ("b", EMBEDDING_MODEL, {"input": ["Say hi."], "encoding_format": "base64"}, "queued"),
    ]


def test_limits_on_lines_and_file_size(tmp_path: Path, database_url: str) -> None:
    runtime = open_runtime(make_settings(tmp_path, database_url, max_batch_requests=3,
                                         max_file_bytes=4096))
    try:
        with LiveServer(create_app(runtime)) as server:
            client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0)
            file_id = upload(client, [chat_line(f"c{i}") for i in range(5)])
            created = client.batches.create(input_file_id=file_id,
                                            endpoint="/v1/chat/completions",
                                            completion_window="24h")
            assert validate_waiting(runtime) == 1  # with this deployment's limits
            batch = client.batches.retrieve(created.id)
            assert batch.status == "failed"
            assert batch.errors is not None and batch.errors.data is not None
            assert [(e.line, e.code) for e in batch.errors.data] == [(4, "too_many_requests")]
            with pytest.raises(openai.APIStatusError) as error:
                client.files.create(file=("big.jsonl", b"x" * 5000), purpose="batch")
            assert error.value.status_code == 413
    finally:
        runtime.close()


def test_create_rejects_unserved_endpoint_window_and_file(client: openai.OpenAI) -> None:
    file_id = upload(client, [chat_line("a")])
    with pytest.raises(openai.UnprocessableEntityError) as unserved:
        client.batches.create(input_file_id=file_id, endpoint="/v1/moderations",
                              completion_window="24h")
    assert unserved.value.param == "endpoint" and "/v1/embeddings" in unserved.value.message
    with pytest.raises(openai.UnprocessableEntityError):
        client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                              completion_window="48h")
    with pytest.raises(openai.NotFoundError) as missing:
        client.batches.create(input_file_id="file-missing", endpoint="/v1/chat/completions",
                              completion_window="24h")
    # The SDK reads code, param and type from penny's error body.
    assert (missing.value.code, missing.value.param, missing.value.type) == (
        "not_found", "input_file_id", "not_found_error")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")


def test_batch_list_pages(client: openai.OpenAI, runtime: Runtime) -> None:
    file_id = upload(client, [chat_line("a")])
    ids = [client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                 completion_window="24h", metadata={"n": str(i)}).id
           for i in range(5)]
    page = client.batches.list(limit=2)
    assert len(page.data) == 2 and page.has_more is True
    assert all(b.status == "validating" and b.request_counts is not None
               and b.request_counts.total == 0 for b in page.data)
    assert validate_waiting(runtime) == 5
    listed = list(client.batches.list(limit=2))
    assert [b.id for b in listed] == list(reversed(ids))
    assert [b.metadata for b in listed] == [{"n": str(i)} for i in reversed(range(5))]
    assert all(b.status == "in_progress" and b.request_counts is not None
               and b.request_counts.total == 1 for b in listed)


def _ended_files(client: openai.OpenAI, batch_id: str) -> tuple[Any, list[dict[str, Any]]]:
    batch = client.batches.retrieve(batch_id)
    assert batch.output_file_id is None  # nothing ran, so nothing succeeded
    assert batch.error_file_id is not None
    content = client.files.content(batch.error_file_id).text
    return batch, [json.loads(line) for line in content.splitlines()]


def test_cancel_before_anything_runs(client: openai.OpenAI, runtime: Runtime) -> None:
    batch = create_chat_batch(client, 4)
    validate_waiting(runtime)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    finalize_ready(runtime.sessions, runtime.store)  # what the sweeper does every few seconds
    ended, errors = _ended_files(client, batch.id)
    assert ended.status == "cancelled" and ended.cancelled_at is not None
    assert ended.request_counts is not None
    assert (ended.request_counts.completed, ended.request_counts.failed) == (0, 4)
    assert [e["custom_id"] for e in errors] == ["c0", "c1", "c2", "c3"]
    assert all(e["error"]["code"] == "batch_cancelled" and e["response"] is None
               and e["penny_cost"] is None for e in errors)
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)
    with runtime.sessions() as session:  # nothing was billed
        assert session.execute(select(func.count()).select_from(LedgerEntry)).scalar_one() == 0


def test_window_runs_out_before_anything_runs(client: openai.OpenAI, runtime: Runtime) -> None:
    batch = client.batches.create(input_file_id=upload(client, [chat_line("e0"),
                                                                chat_line("e1")]),
                                  endpoint="/v1/chat/completions", completion_window="1s")
    assert batch.expires_at is not None and batch.expires_at - batch.created_at == 1
    validate_waiting(runtime)
    time.sleep(1.2)
    sweep(runtime.settings, runtime.sessions, LocalDispatcher([MODEL]), runtime.store)
    ended, errors = _ended_files(client, batch.id)
    assert ended.status == "expired" and ended.expired_at is not None
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [
        ("e0", "batch_expired"), ("e1", "batch_expired")]
    # penny's retry extension, through the SDK's generic request method.
    again = client.post(f"/batches/{batch.id}/retry", cast_to=openai.types.Batch)
    assert again.status == "in_progress" and again.id != batch.id
    assert again.request_counts is not None and again.request_counts.total == 2
    assert again.model_extra is not None and again.model_extra["retry_of"] == batch.id


def test_callback_url_from_extension_field_or_metadata(client: openai.OpenAI) -> None:
    file_id = upload(client, [chat_line("a")])
    by_field = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h",
        extra_body={"callback_url": "https://hooks.example.test/penny"})
    by_metadata = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h",
        metadata={"callback_url": "https://hooks.example.test/meta"})
    assert (by_field.model_extra or {})["callback_url"] == "https://hooks.example.test/penny"
    fetched = client.batches.retrieve(by_metadata.id)
    assert (fetched.model_extra or {})["callback_url"] == "https://hooks.example.test/meta"
    with pytest.raises(openai.UnprocessableEntityError):
        client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                              completion_window="24h", extra_body={"callback_url": "nope"})


def poisoned_batch(client: openai.OpenAI, runtime: Runtime) -> str:
    """A batch whose validation raises: its input file's row is there, its bytes are gone
    from the object store (a store that lost an object, or one that does not answer)."""
    batch = create_chat_batch(client, 2)
    runtime.store.delete(object_key_for(batch.input_file_id))
    return batch.id


def test_a_batch_whose_validation_raises_backs_off_and_does_not_block_newer_ones(
    client: openai.OpenAI, runtime: Runtime
) -> None:
    poisoned = poisoned_batch(client, runtime)
    good = create_chat_batch(client, 3).id
    # Default back-off: one attempt on the poisoned batch, then the good one; then the
    # poisoned one waits out its back-off instead of being retried on every tick.
    assert validate_waiting(runtime) == 2
    assert client.batches.retrieve(good).status == "in_progress"
    assert client.batches.retrieve(poisoned).status == "validating"
    with runtime.sessions() as session:
        row = session.get_one(Submission, uuid.UUID(hex=poisoned.removeprefix("batch_")))
        assert row.validation_attempts == 1 and row.validate_after is not None
    assert not coalescer_of(runtime).validate()
    assert job_count(runtime) == 3


def test_a_batch_whose_validation_keeps_raising_fails_with_the_reason(
    client: openai.OpenAI, runtime: Runtime
) -> None:
    poisoned = poisoned_batch(client, runtime)
    good = create_chat_batch(client, 3).id
    limits = IntakeLimits.from_settings(runtime.settings)
    retry = RetryPolicy(max_attempts=3, retry_seconds=0)  # no back-off: see every attempt
    outcomes = []
    while validated := validate_next_batch(runtime.sessions, runtime.store, limits,
                                           runtime.settings.max_batch_requests, retry):
        outcomes.append((f"batch_{validated.batch_id.hex}", validated.outcome))
    # A batch never tried goes before one that raised, even when it is newer.
    assert outcomes == [(poisoned, Outcome.RETRY), (good, Outcome.QUEUED),
                        (poisoned, Outcome.RETRY), (poisoned, Outcome.FAILED)]
    failed = client.batches.retrieve(poisoned)
    assert failed.status == "failed" and failed.errors is not None
    (error,) = failed.errors.data or []
    assert (error.line, error.code) == (None, "validation_failed")
    assert "failed 3 times" in (error.message or "")
    assert "FileNotFoundError: No such file or directory" in (error.message or "")
    assert str(runtime.settings.data_dir) not in (error.message or "")
    assert client.batches.retrieve(good).status == "in_progress"
