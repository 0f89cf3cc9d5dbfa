"""How a penny submission's state reads as an OpenAI batch status or an Anthropic
processing status, and how its job states add up to each API's request counts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from models.status import JobStatus, SubmissionStatus

_IN_FLIGHT = (JobStatus.QUEUED, JobStatus.BATCHED, JobStatus.RUNNING)


@dataclass(frozen=True)
class BatchState:
    submission_status: str  # a SubmissionStatus value
    cancelling: bool  # a cancel was asked for
    expired: bool  # the completion window ran out before every job ran


def openai_status(state: BatchState) -> str:
    """validating → in_progress → finalizing → completed, or failed / cancelling →
    cancelled / expired. A batch is `validating` from its create request until the
    coalescer has parsed its input file; cancelled then, it reads `cancelling` until it
    is finalized without having queued anything."""
    status = state.submission_status
    if status == SubmissionStatus.VALIDATING:
        return "cancelling" if state.cancelling else "validating"
    if status == SubmissionStatus.FAILED:
        return "failed"
    if status == SubmissionStatus.COMPLETED:
        if state.cancelling:
            return "cancelled"
        return "expired" if state.expired else "completed"
    if state.cancelling:
        return "cancelling"
    if status == SubmissionStatus.FINALIZING or state.expired:
        return "finalizing"
    return "in_progress"


def anthropic_status(state: BatchState) -> str:
    """Message batches are validated in their create request, so never `validating`;
    should one be, it reads `in_progress` (the Anthropic API has no such state)."""
    if state.submission_status in (SubmissionStatus.COMPLETED, SubmissionStatus.FAILED):
        return "ended"
    return "canceling" if state.cancelling else "in_progress"


def openai_request_counts(total: int, counts: Mapping[str, int]) -> dict[str, int]:
    """Cancelled and expired requests count as failed, as the hosted API counts them.
    A batch still validating has no jobs yet: total 0, as the hosted API shows it."""
    failed = sum(counts.get(s, 0) for s in
                 (JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED))
    return {"total": total, "completed": counts.get(JobStatus.SUCCEEDED, 0), "failed": failed}


def anthropic_request_counts(counts: Mapping[str, int]) -> dict[str, int]:
    return {
        "processing": sum(counts.get(s, 0) for s in _IN_FLIGHT),
        "succeeded": counts.get(JobStatus.SUCCEEDED, 0),
        "errored": counts.get(JobStatus.FAILED, 0),
        "canceled": counts.get(JobStatus.CANCELLED, 0),
        "expired": counts.get(JobStatus.EXPIRED, 0),
    }
