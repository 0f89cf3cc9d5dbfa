"""Batches that wait for their engine and still take arrivals: find them, read their jobs,
and grow them.

A batch is grown only while its row is locked here and it is pending and never started.
`claim_batch` updates that row first, so a worker taking the batch waits for the growth
to commit and then claims the grown batch whole; once taken, the batch is never grown
again (a growth that waited for the lock finds it started and skips it).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models.queue import QUEUED_ROW_COLUMNS, QueuedRow, queued_row
from models.status import BatchStatus, JobStatus
from models.tables import Batch, Job


@dataclass(frozen=True)
class WaitingBatch:
    id: uuid.UUID
    jobs: int  # engine jobs in it now (copies parked on them not counted)


def lock_waiting_batches(session: Session, model: str, max_jobs: int) -> list[WaitingBatch]:
    """Lock the model's batches that wait for an engine, take arrivals and have room for
    another job, oldest (next to run) first. One a worker is claiming right now is
    skipped, not waited for."""
    rows = session.execute(
        select(Batch.id, Batch.job_count)
        .where(Batch.model == model, Batch.status == BatchStatus.PENDING,
               Batch.takes_arrivals.is_(True), Batch.started_at.is_(None),
               Batch.job_count < max_jobs)
        .order_by(Batch.created_at, Batch.id)
        .with_for_update(skip_locked=True)
    ).all()
    return [WaitingBatch(row.id, row.job_count) for row in rows]


def batch_members(session: Session, batch_id: uuid.UUID) -> list[QueuedRow]:
    """The engine jobs of a waiting batch, as the planner sees queued jobs."""
    rows = session.execute(
        select(*QUEUED_ROW_COLUMNS)
        .where(Job.batch_id == batch_id, Job.leader_job_id.is_(None),
               Job.status == JobStatus.BATCHED)
    ).all()
    return [queued_row(r) for r in rows]


def grow_batch(session: Session, batch_id: uuid.UUID, job_ids: Sequence[str]) -> None:
    """Make `job_ids` (its members and the queued jobs joining it, locked by the caller)
    the batch's engine jobs in this order. The caller commits."""
    now = datetime.now(UTC)
    session.execute(update(Job), [
        {"id": uuid.UUID(job_id), "status": JobStatus.BATCHED, "batch_id": batch_id,
         "batch_position": position, "updated_at": now}
        for position, job_id in enumerate(job_ids)
    ])
    session.execute(update(Batch).where(Batch.id == batch_id)
                    .values(job_count=len(job_ids)))
