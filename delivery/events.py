"""The event a submission sends when it ends, pure.

The body has the OpenAI webhook event shape, so `client.webhooks.unwrap` parses it into a
`Batch*WebhookEvent`: `{"id": "evt_...", "object": "event", "type": "batch.completed",
"created_at": <unix s>, "data": {"id": <batch id>, ...}}`. penny's figures ride along in
`data` (the SDK keeps unknown fields): the status and request counts as the batch object
shows them, the job counts by state, `penny_cost` (tokens, engine seconds, cost, list-price
cost, savings) and where the outputs are.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from compat.records import CostFigures
from compat.states import BatchState, openai_request_counts, openai_status
from models.status import JobStatus

EVENT_TYPES = ("batch.completed", "batch.failed", "batch.expired", "batch.cancelled")
# The public ids the batch APIs give these kinds of submission (api.batch_views).
_ID_PREFIX = {"openai_batch": "batch_", "anthropic_batch": "msgbatch_"}


def public_id(kind: str, submission_id: uuid.UUID) -> str:
    """How the client knows the submission: `batch_<hex>` for an OpenAI batch,
    `msgbatch_<hex>` for an Anthropic one, the plain id for penny's own submissions."""
    prefix = _ID_PREFIX.get(kind)
    return f"{prefix}{submission_id.hex}" if prefix else str(submission_id)


def event_id(submission_id: uuid.UUID) -> str:
    """One terminal event per submission: the id is derived from it, so a submission
    finalized twice still has one event (and receivers see one `webhook-id`)."""
    return f"evt_{uuid.uuid5(submission_id, 'terminal').hex}"


@dataclass(frozen=True)
class Ended:
    """A submission as it ends."""

    submission_id: uuid.UUID
    kind: str
    status: str  # the SubmissionStatus it ends in: completed or failed
    cancelling: bool
    expired: bool  # its window ran out (the sweeper stamped expired_at)
    ended_at: datetime
    total_jobs: int
    counts: Mapping[str, int]
    cost: CostFigures
    outputs: Mapping[str, str] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    validation_errors: int = 0


def event_type(ended: Ended) -> str:
    """The batch status the OpenAI API would show, as an event type. A window that ran
    out while every line was already running expired nothing: that batch completed."""
    expired = ended.expired and ended.counts.get(JobStatus.EXPIRED, 0) > 0
    status = openai_status(BatchState(ended.status, ended.cancelling, expired))
    kind = f"batch.{status}"
    if kind not in EVENT_TYPES:
        raise ValueError(f"submission {ended.submission_id} has not ended: {status}")
    return kind


def event_payload(ended: Ended) -> dict[str, Any]:
    kind = event_type(ended)
    data: dict[str, Any] = {
        "id": public_id(ended.kind, ended.submission_id),
        "object": "batch",
        "status": kind.removeprefix("batch."),
        "request_counts": openai_request_counts(ended.total_jobs, ended.counts),
        "penny_submission_id": str(ended.submission_id),
        "penny_kind": ended.kind,
        "penny_counts": dict(sorted(ended.counts.items())),
        "penny_cost": ended.cost.as_dict(),
        "penny_outputs": dict(ended.outputs or {}),
        "output_file_id": ended.output_file_id,
        "error_file_id": ended.error_file_id,
    }
    if ended.validation_errors:
        data["penny_validation_errors"] = ended.validation_errors
    return {
        "id": event_id(ended.submission_id),
        "object": "event",
        "type": kind,
        "created_at": int(ended.ended_at.timestamp()),
        "data": data,
    }


def event_body(payload: Mapping[str, Any]) -> str:
    """The exact text that is signed and sent; stored once, so every retry sends the
    same bytes. ASCII-only JSON: receivers decode it as UTF-8 either way."""
    return json.dumps(payload, separators=(",", ":"))
