"""compat: batch states as the hosted APIs name them, and the lines of the output files."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from compat.anthropic_output import result
from compat.openai_output import render_batch_files
from compat.records import LineRecord
from compat.states import (
    BatchState,
    anthropic_request_counts,
    anthropic_status,
    openai_request_counts,
    openai_status,
)


@pytest.mark.parametrize(
    ("status", "cancelling", "expired", "openai", "anthropic"),
    [
        ("validating", False, False, "validating", "in_progress"),
        ("validating", True, False, "cancelling", "canceling"),
        ("open", False, False, "in_progress", "in_progress"),
        ("finalizing", False, False, "finalizing", "in_progress"),
        ("completed", False, False, "completed", "ended"),
        ("failed", False, False, "failed", "ended"),
        ("open", True, False, "cancelling", "canceling"),
        ("finalizing", True, False, "cancelling", "canceling"),
        ("completed", True, False, "cancelled", "ended"),
        ("open", False, True, "finalizing", "in_progress"),
        ("completed", False, True, "expired", "ended"),
    ],
)
def test_states(status: str, cancelling: bool, expired: bool, openai: str, anthropic: str
                ) -> None:
    state = BatchState(status, cancelling, expired)
    assert openai_status(state) == openai
    assert anthropic_status(state) == anthropic


def test_request_counts() -> None:
    counts = {"succeeded": 3, "failed": 1, "cancelled": 2, "expired": 4, "running": 5,
              "queued": 1}
    assert openai_request_counts(16, counts) == {"total": 16, "completed": 3, "failed": 7}
    assert anthropic_request_counts(counts) == {
        "processing": 6, "succeeded": 3, "errored": 1, "canceled": 2, "expired": 4}
    # A batch still validating has no jobs yet, and says so.
    assert openai_request_counts(0, {}) == {"total": 0, "completed": 0, "failed": 0}


def record(status: str, error: dict[str, str] | None = None, billed: bool = False
           ) -> LineRecord:
    ok = status == "succeeded"
    return LineRecord(
        job_id="00000000-0000-0000-0000-00000000000" + str(len(status) % 10), line=1,
        custom_id=f"id-{status}", model="m", status=status, text="Paris." if ok else None,
        finish_reason="stop" if ok else None, error=error, prompt_tokens=20 if ok else 0,
        cached_tokens=16 if ok else 0, output_tokens=3 if ok else 0,
        engine_seconds=0.5 if billed else 0.0,
        cost_usd=Decimal("0.0001") if billed else None,
        list_cost_usd=Decimal("0.0003") if billed else None,
        finished_at=datetime(2026, 1, 2, tzinfo=UTC))


def test_output_and_error_files() -> None:
    records = [
        record("succeeded", billed=True),
        record("failed", {"code": "context_length_exceeded", "message": "too long"}),
        record("failed", {"code": "max_attempts_exceeded", "message": "lost"}),
        record("cancelled"),
        record("expired"),
    ]
    files = render_batch_files(records, "/v1/chat/completions")
    (ok,) = [json.loads(x) for x in files.output.splitlines()]
    body = ok["response"]["body"]
    assert ok["response"]["status_code"] == 200 and ok["error"] is None
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "Paris."
    assert body["usage"] == {
        "prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23,
        "prompt_tokens_details": {"cached_tokens": 16},
        "completion_tokens_details": {"reasoning_tokens": 0}}
    assert body["created"] == int(datetime(2026, 1, 2, tzinfo=UTC).timestamp())
    assert ok["penny_cost"]["saved_usd"] == "0.0002"
    assert ok["penny_cost"]["saved_fraction"] == pytest.approx(0.6667, abs=1e-4)
    errors = [json.loads(x) for x in files.errors.splitlines()]
    assert errors[0]["response"]["status_code"] == 400
    assert errors[0]["response"]["body"]["error"]["code"] == "context_length_exceeded"
    assert [e["error"]["code"] for e in errors[1:]] == [
        "request_timeout", "batch_cancelled", "batch_expired"]
    assert all(e["response"] is None for e in errors[1:])
    assert (files.output_lines, files.error_lines) == (1, 4)


def test_a_chat_line_with_n_and_logprobs_answers_every_choice_in_openai_shape() -> None:
    entry = {"token": "Paris", "logprob": -0.1, "bytes": list(b"Paris"),
             "top_logprobs": [{"token": "Paris", "logprob": -0.1, "bytes": list(b"Paris")}]}
    second = {"text": "Lyon.", "finish_reason": "length", "output_tokens": 2,
              "token_logprobs": [{**entry, "token": "Lyon"}]}
    line = dataclasses.replace(record("succeeded", billed=True), token_logprobs=[entry],
                               choices=[second], asked_logprobs=True, output_tokens=5)
    files = render_batch_files([line], "/v1/chat/completions")
    body = json.loads(files.output)["response"]["body"]
    first, other = body["choices"]
    assert (first["index"], first["message"]["content"], first["finish_reason"]) == (
        0, "Paris.", "stop")
    assert first["logprobs"] == {"content": [entry], "refusal": None}
    assert (other["index"], other["message"]["content"], other["finish_reason"]) == (
        1, "Lyon.", "length")
    assert other["logprobs"]["content"][0]["token"] == "Lyon"
    assert body["usage"]["completion_tokens"] == 5
    plain = json.loads(render_batch_files([record("succeeded")], "/v1/chat/completions")
                       .output)["response"]["body"]
    assert [c["logprobs"] for c in plain["choices"]] == [None]


def test_anthropic_results() -> None:
    succeeded = result(record("succeeded", billed=True))
    assert succeeded["message"]["usage"] == {
        "input_tokens": 4, "cache_read_input_tokens": 16, "cache_creation_input_tokens": 0,
        "output_tokens": 3}
    assert succeeded["message"]["stop_reason"] == "end_turn"
    assert result(record("cancelled")) == {"type": "canceled"}
    assert result(record("expired")) == {"type": "expired"}
    errored = result(record("failed", {"code": "model_not_found", "message": "no"}))
    assert errored["error"]["error"] == {"type": "invalid_request_error", "message": "no"}
