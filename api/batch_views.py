"""Wire objects of the batch APIs: OpenAI File and Batch objects (Unix-second timestamps),
Anthropic MessageBatch objects (RFC 3339 timestamps), and the list envelopes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from compat.states import (
    BatchState,
    anthropic_request_counts,
    anthropic_status,
    openai_request_counts,
    openai_status,
)
from models.batches import Progress
from models.status import JobStatus
from models.tables import StoredFile, Submission

OPENAI_BATCH_PREFIX = "batch_"
ANTHROPIC_BATCH_PREFIX = "msgbatch_"


def unix(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def file_object(row: StoredFile) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "file",
        "bytes": row.bytes,
        "created_at": unix(row.created_at),
        "expires_at": unix(row.expires_at),
        "filename": row.filename,
        "purpose": row.purpose,
        "status": "processed",
        "status_details": None,
    }


def openai_list(items: Sequence[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": list(items),
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }


def _state(row: Submission, progress: Progress) -> BatchState:
    # A window that ran out while every line was already running expired nothing.
    expired = row.expired_at is not None and progress.counts.get(JobStatus.EXPIRED, 0) > 0
    return BatchState(row.status, row.cancelling_at is not None, expired)


def openai_batch(row: Submission, progress: Progress) -> dict[str, Any]:
    state = _state(row, progress)
    status = openai_status(state)
    cost = progress.cost
    return {
        "id": f"{OPENAI_BATCH_PREFIX}{row.id.hex}",
        "object": "batch",
        "endpoint": row.endpoint,
        "model": next(iter(progress.models)) if len(progress.models) == 1 else None,
        "errors": {"object": "list", "data": row.errors} if row.errors else None,
        "input_file_id": row.input_file_id,
        "completion_window": row.completion_window,
        "status": status,
        "output_file_id": row.output_file_id,
        "error_file_id": row.error_file_id,
        "created_at": unix(row.created_at),
        "in_progress_at": unix(row.in_progress_at),
        "expires_at": unix(row.expires_at),
        "finalizing_at": unix(row.finalizing_since),
        "completed_at": unix(row.completed_at) if status == "completed" else None,
        "failed_at": unix(row.failed_at),
        "expired_at": unix(row.expired_at) if state.expired else None,
        "cancelling_at": unix(row.cancelling_at),
        "cancelled_at": unix(row.completed_at) if status == "cancelled" else None,
        "request_counts": openai_request_counts(row.total_jobs, progress.counts),
        "usage": {
            "input_tokens": cost.input_tokens,
            "input_tokens_details": {"cached_tokens": cost.cached_tokens},
            "output_tokens": cost.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": cost.input_tokens + cost.output_tokens,
        },
        "metadata": row.batch_metadata,
        # penny's extensions; the SDKs keep unknown fields.
        "penny_cost": cost.as_dict(),
        "callback_url": row.callback_url,
        "retry_of": f"{OPENAI_BATCH_PREFIX}{row.retry_of.hex}" if row.retry_of else None,
    }


def anthropic_batch(row: Submission, progress: Progress, results_url: str) -> dict[str, Any]:
    status = anthropic_status(_state(row, progress))
    return {
        "id": f"{ANTHROPIC_BATCH_PREFIX}{row.id.hex}",
        "type": "message_batch",
        "processing_status": status,
        "request_counts": anthropic_request_counts(progress.counts),
        "ended_at": rfc3339(row.completed_at),
        "created_at": rfc3339(row.created_at),
        "expires_at": rfc3339(row.expires_at),
        "archived_at": None,
        "cancel_initiated_at": rfc3339(row.cancelling_at),
        "results_url": results_url if status == "ended" else None,
        "penny_cost": progress.cost.as_dict(),
    }


def anthropic_list(items: Sequence[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "data": list(items),
        "has_more": has_more,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
    }
