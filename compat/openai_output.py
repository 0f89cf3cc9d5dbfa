"""The output and error files of an OpenAI batch. Pure.

Every line is `{id, custom_id, response, error}`: a succeeded request carries a normal
chat.completion / text_completion / embeddings list body with status 200 in the output
file; everything else
goes to the error file, as an HTTP-style error in `response` when the request itself was
at fault, or as `error: {code, message}` when the batch stopped it (cancel, expiry, a
worker lost too often). penny adds `penny_cost` to every line that was billed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from compat.records import LineRecord, line_penny_cost
from compat.tool_calls import read_tool_calls
from compat.vectors import base64_vector, float_list, split_vectors
from models.status import JobStatus

CHAT_ENDPOINT = "/v1/chat/completions"
EMBEDDINGS_ENDPOINT = "/v1/embeddings"
# Job error codes that mean "the batch, not the request, ended this line".
_BATCH_LEVEL_ERRORS = {
    JobStatus.CANCELLED: ("batch_cancelled", "the batch was cancelled before this request ran"),
    JobStatus.EXPIRED: ("batch_expired",
                        "the batch's completion window ran out before this request ran"),
}
_TIMEOUT_CODES = frozenset({"max_attempts_exceeded"})
# Errors a request brings on itself (400); anything else is the server's fault (500).
_CLIENT_ERROR_CODES = frozenset({"context_length_exceeded", "invalid_request", "invalid_line",
                                 "invalid_json", "model_not_found"})


@dataclass(frozen=True)
class BatchFiles:
    output: bytes
    errors: bytes
    output_lines: int
    error_lines: int


def _unix(record: LineRecord) -> int:
    return int(record.finished_at.timestamp()) if record.finished_at else 0


def _usage(record: LineRecord) -> dict[str, Any]:
    return {
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.output_tokens,
        "total_tokens": record.prompt_tokens + record.output_tokens,
        "prompt_tokens_details": {"cached_tokens": record.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def embedding_body(record: LineRecord) -> dict[str, Any]:
    """An embeddings response: one vector per input, `index` its place in the input."""
    vectors = (split_vectors(record.embedding, record.embedding_dimensions or 0)
               if record.embedding else [])
    encode = base64_vector if record.encoding_format == "base64" else float_list
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": index, "embedding": encode(vector)}
                 for index, vector in enumerate(vectors)],
        "model": record.model,
        "usage": {"prompt_tokens": record.prompt_tokens, "total_tokens": record.prompt_tokens},
    }


def _samples(record: LineRecord) -> list[dict[str, Any]]:
    """Every answer of the line, the first one included, in index order."""
    first = {"text": record.text or "", "finish_reason": record.finish_reason,
             "token_logprobs": record.token_logprobs}
    return [first, *(record.choices or [])]


def _chat_choice(index: int, sample: dict[str, Any], record: LineRecord) -> dict[str, Any]:
    logprobs = ({"content": sample.get("token_logprobs") or [], "refusal": None}
                if record.asked_logprobs else None)
    message: dict[str, Any] = {"role": "assistant", "content": sample["text"],
                               "refusal": None}
    finish_reason = sample["finish_reason"]
    if record.offered_tools:
        read = read_tool_calls(sample["text"], record.offered_tools,
                               f"{record.job_id.replace('-', '')}_{index}")
        if read.calls:
            message = {**message, "content": read.content, "tool_calls": read.calls}
            finish_reason = "tool_calls" if finish_reason == "stop" else finish_reason
    return {"index": index, "message": message, "logprobs": logprobs,
            "finish_reason": finish_reason}


def completion_body(record: LineRecord, endpoint: str) -> dict[str, Any]:
    """The body the synchronous endpoint would have answered with."""
    hex_id = record.job_id.replace("-", "")
    if endpoint == EMBEDDINGS_ENDPOINT:
        return embedding_body(record)
    if endpoint == CHAT_ENDPOINT:
        return {
            "id": f"chatcmpl-{hex_id}",
            "object": "chat.completion",
            "created": _unix(record),
            "model": record.model,
            "choices": [_chat_choice(index, sample, record)
                        for index, sample in enumerate(_samples(record))],
            "usage": _usage(record),
            "system_fingerprint": None,
        }
    return {
        "id": f"cmpl-{hex_id}",
        "object": "text_completion",
        "created": _unix(record),
        "model": record.model,
        "choices": [{"index": index, "text": sample["text"], "logprobs": None,
                     "finish_reason": sample["finish_reason"]}
                    for index, sample in enumerate(_samples(record))],
        "usage": _usage(record),
        "system_fingerprint": None,
    }


def _failure(record: LineRecord) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(response, error) for a line that did not succeed."""
    batch_level = _BATCH_LEVEL_ERRORS.get(JobStatus(record.status))
    if batch_level is not None:
        return None, {"code": batch_level[0], "message": batch_level[1]}
    error = record.error or {}
    code = str(error.get("code") or "server_error")
    message = str(error.get("message") or "the request failed")
    if code in _TIMEOUT_CODES:
        return None, {"code": "request_timeout", "message": message}
    client_fault = code in _CLIENT_ERROR_CODES
    return {
        "status_code": 400 if client_fault else 500,
        "request_id": f"req_{record.job_id.replace('-', '')}",
        "body": {"error": {
            "message": message,
            "type": "invalid_request_error" if client_fault else "server_error",
            "param": error.get("param"),
            "code": code,
        }},
    }, None


def output_line(record: LineRecord, endpoint: str) -> dict[str, Any]:
    hex_id = record.job_id.replace("-", "")
    if record.status == JobStatus.SUCCEEDED:
        response: dict[str, Any] | None = {
            "status_code": 200,
            "request_id": f"req_{hex_id}",
            "body": completion_body(record, endpoint),
        }
        error = None
    else:
        response, error = _failure(record)
    line: dict[str, Any] = {"id": f"batch_req_{hex_id}", "custom_id": record.custom_id,
                            "response": response, "error": error}
    line["penny_cost"] = line_penny_cost(record)
    return line


def _jsonl(lines: Sequence[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()


def render_batch_files(records: Sequence[LineRecord], endpoint: str) -> BatchFiles:
    """Split a finished batch into its output file and its error file, in line order."""
    ok = [output_line(r, endpoint) for r in records if r.status == JobStatus.SUCCEEDED]
    failed = [output_line(r, endpoint) for r in records if r.status != JobStatus.SUCCEEDED]
    return BatchFiles(output=_jsonl(ok), errors=_jsonl(failed), output_lines=len(ok),
                      error_lines=len(failed))
