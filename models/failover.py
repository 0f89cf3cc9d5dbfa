"""Failing over a batch whose engine raised, at once instead of after its lease.

An exception from the engine says something in the batch broke it, not which job. The batch
is split in two halves that run again on their own: the halves that do not hold the culprit
succeed, the one that does splits again, until the culprit runs alone. A job that fails alone
is tried again up to `max_attempts` times (the fault may have been passing) and then fails
with the engine's reason. A split burns no attempt of its jobs: only runs alone count, so a
poison job in a batch of hundreds is still tried `max_attempts` times by itself.

The seconds a raising call ran are real cost. Nobody can say which job used them, so each
half carries its share by job count (with what the batch already carried), a lone job
retried keeps carrying its own, and the jobs pay their shares when they are recorded
(`saving_failover_usd`). A job that runs out of attempts bills nothing (as before): what
its failed calls cost is not billed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from models.queue import ClaimedBatch, ClaimedJob
from models.status import BatchStatus, JobStatus
from models.tables import Batch, Job

ENGINE_ERROR = "engine_error"
# Kept short in the job's error: a traceback's last line says enough, and the row is the
# user's to read.
MAX_REASON_CHARS = 500


@dataclass(frozen=True)
class Failover:
    """What became of a batch whose engine raised.

    `rerun`: batches (the halves, or the batch itself for a lone job with attempts left)
    to dispatch again. `failed_jobs`: jobs that ran out of attempts and failed. `held`:
    False when the batch was no longer ours (its lease was lost): nothing changed."""

    held: bool
    rerun: list[uuid.UUID]
    failed_jobs: list[uuid.UUID]


def halves(jobs: list[ClaimedJob]) -> tuple[list[ClaimedJob], list[ClaimedJob]]:
    """Split in the planner's order: prefix groups sit together, so each half keeps most
    of its shared prefixes."""
    middle = (len(jobs) + 1) // 2
    return jobs[:middle], jobs[middle:]


def engine_failure_message(reason: str, attempts: int) -> str:
    return (f"the engine failed on this request {attempts} time(s) when it ran alone, so it "
            f"was given up: {reason[:MAX_REASON_CHARS]}")


def fail_over(session: Session, batch: ClaimedBatch, *, max_attempts: int, reason: str,
              failed_seconds: float = 0.0) -> Failover:
    """Split the batch, retry its lone job, or fail that job when it is out of attempts;
    `failed_seconds` (what the raising call ran) is carried on. Fenced by the claim token
    like `record_batch`; commits."""
    carried = batch.failover_seconds + max(failed_seconds, 0.0)
    held = session.execute(
        select(Batch.prefix_key, Batch.shared_prefix_tokens)
        .where(Batch.id == batch.id, Batch.claim_token == batch.claim_token,
               Batch.status == BatchStatus.RUNNING)
        .with_for_update()
    ).one_or_none()
    if held is None:
        session.rollback()
        return Failover(held=False, rerun=[], failed_jobs=[])
    if len(batch.jobs) > 1:
        rerun = _split(session, batch, held.prefix_key, held.shared_prefix_tokens, carried)
        session.commit()
        return Failover(held=True, rerun=rerun, failed_jobs=[])
    failed = _retry_or_fail_alone(session, batch, max_attempts, reason, carried)
    session.commit()
    return Failover(held=True, rerun=[] if failed else [batch.id], failed_jobs=failed)


def _split(session: Session, batch: ClaimedBatch, prefix_key: str | None,
           shared_prefix_tokens: int, carried: float) -> list[uuid.UUID]:
    now = func.now()
    new_ids: list[uuid.UUID] = []
    for half in halves(batch.jobs):
        half_id = uuid.uuid4()
        ids = [job.id for job in half]
        session.execute(insert(Batch).values(
            id=half_id, model=batch.model, status=BatchStatus.PENDING, job_count=len(ids),
            prefix_key=prefix_key, shared_prefix_tokens=shared_prefix_tokens,
            dispatched_at=now, failover_seconds=carried * len(half) / len(batch.jobs),
        ))
        # The run that raised was the batch's, not yet any one job's: give its attempt back.
        session.execute(
            update(Job).where(Job.id.in_(ids), Job.status == JobStatus.RUNNING)
            .values(status=JobStatus.BATCHED, batch_id=half_id,
                    attempts=func.greatest(Job.attempts - 1, 0), updated_at=now)
        )
        # Copies parked on the batch wait for their leader's answer in its half.
        session.execute(
            update(Job).where(Job.batch_id == batch.id, Job.leader_job_id.in_(ids),
                              Job.status == JobStatus.BATCHED)
            .values(batch_id=half_id, updated_at=now)
        )
        new_ids.append(half_id)
    session.execute(
        update(Batch).where(Batch.id == batch.id)
        .values(status=BatchStatus.SPLIT, claim_token=None, lease_expires_at=None,
                finished_at=now)
    )
    return new_ids


def _retry_or_fail_alone(session: Session, batch: ClaimedBatch, max_attempts: int,
                         reason: str, carried: float) -> list[uuid.UUID]:
    now = func.now()
    job_ids = [job.id for job in batch.jobs]
    attempts = max(session.execute(select(Job.attempts).where(Job.id.in_(job_ids)))
                   .scalars().all(), default=max_attempts)
    if attempts < max_attempts:
        session.execute(
            update(Job).where(Job.id.in_(job_ids), Job.status == JobStatus.RUNNING)
            .values(status=JobStatus.BATCHED, updated_at=now)
        )
        session.execute(
            update(Batch).where(Batch.id == batch.id)
            .values(status=BatchStatus.PENDING, claim_token=None, worker_id=None,
                    lease_expires_at=None, dispatched_at=now, failover_seconds=carried)
        )
        return []
    error = {"code": ENGINE_ERROR, "message": engine_failure_message(reason, attempts)}
    failed = session.execute(
        update(Job)
        .where(Job.batch_id == batch.id,
               Job.status.in_([JobStatus.RUNNING, JobStatus.BATCHED]))
        .values(status=JobStatus.FAILED, error=error, finished_at=now, updated_at=now)
        .returning(Job.id)
    ).scalars().all()
    session.execute(
        update(Batch).where(Batch.id == batch.id)
        .values(status=BatchStatus.FAILED, claim_token=None, lease_expires_at=None,
                finished_at=now, failover_seconds=carried)
    )
    return list(failed)


def hand_back(session: Session, batch: ClaimedBatch, failed_seconds: float = 0.0) -> bool:
    """Give a batch back untouched because the worker's engine, not the batch, is broken:
    pending again and marked never sent (the sweeper sends it to the model's other workers
    at once), and neither the batch nor its jobs lose an attempt; the seconds the raising
    call ran are carried with it. Fenced by the claim token; commits. False when the batch
    was no longer ours."""
    now = func.now()
    handed = session.execute(
        update(Batch)
        .where(Batch.id == batch.id, Batch.claim_token == batch.claim_token,
               Batch.status == BatchStatus.RUNNING)
        .values(status=BatchStatus.PENDING, claim_token=None, worker_id=None,
                target_worker=None, lease_expires_at=None, dispatched_at=None,
                attempts=func.greatest(Batch.attempts - 1, 0),
                failover_seconds=Batch.failover_seconds + max(failed_seconds, 0.0))
        .returning(Batch.id)
    ).scalar_one_or_none()
    if handed is None:
        session.rollback()
        return False
    session.execute(
        update(Job).where(Job.batch_id == batch.id, Job.status == JobStatus.RUNNING)
        .values(status=JobStatus.BATCHED, attempts=func.greatest(Job.attempts - 1, 0),
                updated_at=now)
    )
    session.commit()
    return True
