"""Anthropic Message Batches: a penny job as a message, and the results file. Pure."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from compat.records import LineRecord, line_penny_cost
from models.status import JobStatus

# vLLM says "stop" for the end of turn and for a stop string alike.
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}


def message(record: LineRecord) -> dict[str, Any]:
    return {
        "id": f"msg_{record.job_id.replace('-', '')}",
        "type": "message",
        "role": "assistant",
        "model": record.model,
        "content": [{"type": "text", "text": record.text or ""}],
        "stop_reason": _STOP_REASONS.get(record.finish_reason or "", "end_turn"),
        "stop_sequence": None,
        "usage": {
            # Anthropic counts cache reads apart from input tokens.
            "input_tokens": record.prompt_tokens - record.cached_tokens,
            "cache_read_input_tokens": record.cached_tokens,
            "cache_creation_input_tokens": 0,
            "output_tokens": record.output_tokens,
        },
    }


def result(record: LineRecord) -> dict[str, Any]:
    status = JobStatus(record.status)
    if status == JobStatus.SUCCEEDED:
        return {"type": "succeeded", "message": message(record)}
    if status == JobStatus.CANCELLED:
        return {"type": "canceled"}
    if status == JobStatus.EXPIRED:
        return {"type": "expired"}
    error = record.error or {}
    code = str(error.get("code") or "api_error")
    kind = "api_error" if code == "max_attempts_exceeded" else "invalid_request_error"
    return {"type": "errored", "error": {
        "type": "error",
        "error": {"type": kind, "message": str(error.get("message") or code)},
    }}


def results_jsonl(records: Sequence[LineRecord]) -> bytes:
    lines = []
    for record in records:
        lines.append(json.dumps({"custom_id": record.custom_id, "result": result(record),
                                 "penny_cost": line_penny_cost(record)},
                                ensure_ascii=False))
    return "".join(line + "\n" for line in lines).encode()
