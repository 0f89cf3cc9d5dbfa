"""What the queue looks like now, for the metrics scrape: jobs in each unfinished state,
how long the oldest queued job has waited, live workers, batches waiting validation.

Each count walks an index (queued jobs, active batches and their jobs, validating
submissions), never the whole jobs table: it runs on every scrape. Finished jobs are
counted by the workers' counters instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.status import BatchStatus, JobStatus, SubmissionStatus
from models.tables import Batch, Job, Submission
from models.workers import live_workers


@dataclass(frozen=True)
class QueueGauges:
    jobs: dict[tuple[str, str], int] = field(default_factory=dict)  # (model, state) -> jobs
    oldest_queued_seconds: dict[str, float] = field(default_factory=dict)  # model -> age
    live_workers: dict[str, int] = field(default_factory=dict)
    validating_batches: int = 0


def queue_gauges(session: Session, stale_worker_seconds: float) -> QueueGauges:
    jobs: dict[tuple[str, str], int] = {}
    oldest: dict[str, float] = {}
    queued = session.execute(
        select(Job.model, func.count(),
               func.extract("epoch", func.now() - func.min(Job.created_at)))
        .where(Job.status == JobStatus.QUEUED)
        .group_by(Job.model)
    )
    for model, count, age in queued:
        jobs[(model, JobStatus.QUEUED.value)] = int(count)
        oldest[model] = max(0.0, float(age))
    # Batched and running jobs sit in pending or running batches.
    in_batches = session.execute(
        select(Job.model, Job.status, func.count())
        .join(Batch, Batch.id == Job.batch_id)
        .where(Batch.status.in_([BatchStatus.PENDING, BatchStatus.RUNNING]),
               Job.status.in_([JobStatus.BATCHED, JobStatus.RUNNING]))
        .group_by(Job.model, Job.status)
    )
    for model, status, count in in_batches:
        jobs[(model, str(status))] = int(count)
    validating = session.execute(
        select(func.count()).select_from(Submission)
        .where(Submission.status == SubmissionStatus.VALIDATING)
    ).scalar_one()
    workers = {model: len(ids) for model, ids in
               live_workers(session, stale_worker_seconds).items()}
    return QueueGauges(jobs=jobs, oldest_queued_seconds=oldest, live_workers=workers,
                       validating_batches=int(validating))
