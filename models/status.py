"""Job and batch states, and which moves between them are legal."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    BATCHED = "batched"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    # A cascade attempt whose answer was not confident enough: the job it was copied from
    # went on to the next tier (see Job.cascade_of).
    ESCALATED = "escalated"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_JOB_STATUSES


TERMINAL_JOB_STATUSES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED,
     JobStatus.ESCALATED}
)

# A job moves forward only; "batched -> queued" and "running -> batched" are the sweeper
# handing work back after a lost lease.
JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset(
        {JobStatus.BATCHED, JobStatus.CANCELLED, JobStatus.EXPIRED, JobStatus.FAILED}
    ),
    JobStatus.BATCHED: frozenset(
        {JobStatus.RUNNING, JobStatus.QUEUED, JobStatus.CANCELLED, JobStatus.EXPIRED,
         JobStatus.FAILED}
    ),
    JobStatus.RUNNING: frozenset(
        {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.BATCHED, JobStatus.CANCELLED,
         JobStatus.EXPIRED}
    ),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
    JobStatus.EXPIRED: frozenset(),
    JobStatus.ESCALATED: frozenset(),
}


def can_move(current: JobStatus, target: JobStatus) -> bool:
    return target in JOB_TRANSITIONS[current]


class BatchStatus(StrEnum):
    PENDING = "pending"  # written and dispatched, no worker holds it
    RUNNING = "running"  # a worker holds the lease
    DONE = "done"
    FAILED = "failed"  # gave up after max attempts
    # The engine raised while running it: its jobs went on in two new half batches, so one
    # poison job is found by bisection and never takes its batch-mates down with it.
    SPLIT = "split"


class SubmissionStatus(StrEnum):
    # An OpenAI batch whose input file the coalescer has not parsed yet; it has no jobs.
    VALIDATING = "validating"
    OPEN = "open"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"  # a batch whose input failed validation; nothing ran
