"""Queries that move work through the queue: claim, batch, lease, record, sweep.

Every time comparison uses the database clock, so leases mean the same thing to every
process whatever its own clock says.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, insert, or_, select, update
from sqlalchemy.orm import Session

from cache.keys import CachePolicy
from coalescer.planning import PlannedBatch, QueuedJob
from models.cascade import EscalatedAttempt, Escalation, record_escalations
from models.result_cache import fill_result_cache
from models.single_flight import answer_followers
from models.status import BatchStatus, JobStatus
from models.tables import Batch, Job, LedgerEntry, Result, result_row


@dataclass(frozen=True)
class QueueSnapshot:
    jobs: int
    tokens: int
    urgent: int  # jobs whose deadline is within the urgency horizon


def _is_urgent(urgent_within: timedelta) -> ColumnElement[bool]:
    return and_(Job.deadline_at.is_not(None), Job.deadline_at <= func.now() + urgent_within)


def queued_snapshot(
    session: Session, models: Sequence[str], urgent_within: timedelta
) -> QueueSnapshot:
    # The batch budget counts prompts, not output allowances (see QueuedJob.budget_tokens).
    allowance = (func.coalesce(Job.request["sampling"]["max_tokens"].as_integer(), 0)
                 * func.coalesce(Job.request["sampling"]["n"].as_integer(), 1))
    jobs, tokens, urgent = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(func.greatest(Job.estimated_tokens - allowance, 0)), 0),
            func.count().filter(_is_urgent(urgent_within)),
        ).where(Job.status == JobStatus.QUEUED, Job.model.in_(models))
    ).one()
    return QueueSnapshot(jobs=int(jobs), tokens=int(tokens), urgent=int(urgent))


def queued_models(session: Session) -> list[str]:
    return list(
        session.execute(
            select(Job.model).where(Job.status == JobStatus.QUEUED).distinct()
        ).scalars()
    )


def pending_batch_counts(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(Batch.model, func.count())
        .where(Batch.status == BatchStatus.PENDING)
        .group_by(Batch.model)
    )
    return {model: int(n) for model, n in rows}


def output_allowance(request: dict[str, Any]) -> int:
    """The output tokens a stored request may ask for: max_tokens for each of its n."""
    sampling = request.get("sampling") or {}
    return int(sampling.get("max_tokens") or 0) * int(sampling.get("n") or 1)


@dataclass(frozen=True)
class QueuedRow:
    job: QueuedJob
    request: dict[str, Any]  # the stored engine request, for the tokenizer


def claim_queued_jobs(
    session: Session, model: str, limit: int, urgent_within: timedelta
) -> list[QueuedRow]:
    """Lock up to `limit` queued jobs of one model, near-deadline first, then by priority
    and age. Concurrent coalescers skip each other's rows; rows the plan does not use are
    released unchanged at commit."""
    rows = session.execute(
        select(*QUEUED_ROW_COLUMNS)
        .where(Job.status == JobStatus.QUEUED, Job.model == model)
        .order_by(_is_urgent(urgent_within).desc(), Job.priority, Job.created_at,
                  Job.line_no)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [queued_row(r) for r in rows]


# What the planner reads of a job (`queued_row` makes it a QueuedRow).
QUEUED_ROW_COLUMNS = (Job.id, Job.model, Job.estimated_tokens, Job.priority, Job.created_at,
                      Job.tenant_id, Job.deadline_at, Job.single_flight_key, Job.request)


def queued_row(r: Any) -> QueuedRow:
    return QueuedRow(
        QueuedJob(id=str(r.id), model=r.model, estimated_tokens=r.estimated_tokens,
                  priority=r.priority, created_at=r.created_at, tenant=str(r.tenant_id),
                  deadline_at=r.deadline_at, single_flight_key=r.single_flight_key,
                  output_tokens=output_allowance(r.request)),
        r.request,
    )


def create_batches(
    session: Session, planned: Sequence[PlannedBatch], targets: Sequence[str | None],
    traceparents: Sequence[str | None] | None = None,
) -> list[uuid.UUID]:
    """Write one batch row per plan, move its jobs to `batched` and attach the copies that
    single-flight answers from a leader in the batch. `traceparents`: each batch's trace
    context, when tracing is on. The caller commits."""
    batch_ids: list[uuid.UUID] = []
    contexts = traceparents if traceparents is not None else [None] * len(planned)
    for plan, target, traceparent in zip(planned, targets, contexts, strict=True):
        batch_id = uuid.uuid4()
        session.execute(
            insert(Batch).values(
                id=batch_id,
                model=plan.model,
                status=BatchStatus.PENDING,
                job_count=len(plan.job_ids),
                prefix_key=plan.prefix_key,
                shared_prefix_tokens=plan.shared_prefix_tokens,
                target_worker=target,
                dispatched_at=func.now(),
                traceparent=traceparent,
                takes_arrivals=True,
            )
        )
        now = datetime.now(UTC)  # SQL now() cannot ride along in an executemany
        session.execute(update(Job), [
            {"id": uuid.UUID(job_id), "status": JobStatus.BATCHED, "batch_id": batch_id,
             "batch_position": position, "updated_at": now}
            for position, job_id in enumerate(plan.job_ids)
        ])
        batch_ids.append(batch_id)
    return batch_ids


@dataclass(frozen=True)
class ClaimedJob:
    id: uuid.UUID
    tenant_id: uuid.UUID
    submission_id: uuid.UUID
    request: dict[str, Any]
    cache_mode: str = "on"  # whether its answer may fill the exact result cache
    route: dict[str, Any] | None = None  # how auto or cascade chose its tier
    tags: dict[str, Any] | None = None  # its metadata (a cascade's verifier is per tag)


@dataclass(frozen=True)
class ClaimedBatch:
    id: uuid.UUID
    model: str
    claim_token: uuid.UUID
    jobs: list[ClaimedJob]
    # The coalescer's trace context for this batch, when tracing is on.
    traceparent: str | None = None
    # Seconds of engine calls that raised on these jobs, to bill with them.
    failover_seconds: float = 0.0


def claim_batch(
    session: Session, batch_id: uuid.UUID, worker_id: str, lease_seconds: float
) -> ClaimedBatch | None:
    """Take a pending batch for this worker; None if someone else has it or it is done.

    This conditional update is what makes a redelivered or duplicated task harmless.
    """
    token = uuid.uuid4()
    claimed = session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.status == BatchStatus.PENDING)
        .values(
            status=BatchStatus.RUNNING,
            claim_token=token,
            worker_id=worker_id,
            attempts=Batch.attempts + 1,
            lease_expires_at=func.now() + timedelta(seconds=lease_seconds),
            started_at=func.now(),
        )
        .returning(Batch.model, Batch.traceparent, Batch.failover_seconds)
    ).one_or_none()
    if claimed is None:
        session.rollback()
        return None
    rows = session.execute(
        update(Job)
        .where(Job.batch_id == batch_id, Job.leader_job_id.is_(None),
               Job.status.in_([JobStatus.BATCHED, JobStatus.RUNNING]))
        .values(status=JobStatus.RUNNING, attempts=Job.attempts + 1, updated_at=func.now())
        .returning(Job.id, Job.tenant_id, Job.submission_id, Job.request, Job.batch_position,
                   Job.created_at, Job.line_no, Job.cache_mode, Job.route, Job.tags)
    ).all()
    # The engine sees jobs in the order the planner put them (RETURNING has no order).
    ordered = sorted(rows, key=lambda r: (r.batch_position or 0, r.created_at, r.line_no,
                                          r.id))
    jobs = [ClaimedJob(r.id, r.tenant_id, r.submission_id, r.request, r.cache_mode, r.route,
                       r.tags)
            for r in ordered]
    session.commit()
    return ClaimedBatch(id=batch_id, model=claimed.model, claim_token=token, jobs=jobs,
                        traceparent=claimed.traceparent,
                        failover_seconds=float(claimed.failover_seconds or 0.0))


def renew_lease(
    session: Session, batch_id: uuid.UUID, claim_token: uuid.UUID, lease_seconds: float
) -> bool:
    renewed = session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.claim_token == claim_token,
               Batch.status == BatchStatus.RUNNING)
        .values(lease_expires_at=func.now() + timedelta(seconds=lease_seconds))
        .returning(Batch.id)
    ).scalar_one_or_none()
    session.commit()
    return renewed is not None


@dataclass(frozen=True)
class JobOutcome:
    """What the worker writes for one job: a result and ledger row, or an error."""

    job: ClaimedJob
    result: dict[str, Any] | None
    ledger: dict[str, Any] | None
    error: dict[str, Any] | None
    # A cascade answer not confident enough: billed as an attempt, the job goes on.
    escalation: Escalation | None = None
    # Sent to another tier before it ran (the router's classifier): nothing billed.
    reroute: Reroute | None = None


@dataclass(frozen=True)
class Reroute:
    to_model: str
    route: dict[str, Any]  # the job's route, saying why


def record_batch(
    session: Session, batch: ClaimedBatch, outcomes: Sequence[JobOutcome], engine_seconds: float,
    cache: CachePolicy | None = None,
    also: Callable[[Session], None] | None = None,
) -> bool:
    """Write results, ledger rows and job states in one transaction, if we still hold the
    batch, and fill the exact result cache (`cache`, as this worker sees its model) in the
    same transaction. Returns False (writing nothing) when our lease was lost to another
    worker."""
    held = session.execute(
        select(Batch.id)
        .where(Batch.id == batch.id, Batch.claim_token == batch.claim_token,
               Batch.status == BatchStatus.RUNNING)
        .with_for_update()
    ).scalar_one_or_none()
    if held is None:
        session.rollback()
        return False
    escalated = [EscalatedAttempt(o.job.id, o.result, o.ledger, o.escalation)
                 for o in outcomes if o.escalation is not None
                 and o.result is not None and o.ledger is not None]
    record_escalations(session, batch.id, batch.model, escalated)
    succeeded = [o for o in outcomes if o.result is not None and o.escalation is None]
    if succeeded:
        session.execute(insert(Result), [result_row(o.result, job_id=o.job.id,
                                                    batch_id=batch.id)
                                         for o in succeeded if o.result is not None])
        session.execute(insert(LedgerEntry), [
            {**o.ledger, "job_id": o.job.id, "tenant_id": o.job.tenant_id,
             "submission_id": o.job.submission_id, "batch_id": batch.id}
            for o in succeeded if o.ledger is not None
        ])
        session.execute(
            update(Job)
            .where(Job.id.in_([o.job.id for o in succeeded]), Job.status == JobStatus.RUNNING)
            .values(status=JobStatus.SUCCEEDED, finished_at=func.now(), updated_at=func.now())
        )
    for outcome in outcomes:
        if outcome.reroute is not None:
            # It never ran: back to the queue on its new tier, its attempt given back.
            session.execute(
                update(Job)
                .where(Job.id == outcome.job.id, Job.status == JobStatus.RUNNING)
                .values(status=JobStatus.QUEUED, model=outcome.reroute.to_model,
                        route=outcome.reroute.route, batch_id=None, batch_position=None,
                        attempts=func.greatest(Job.attempts - 1, 0), updated_at=func.now())
            )
        if outcome.error is not None:
            failed = session.execute(
                update(Job)
                .where(Job.id == outcome.job.id, Job.status == JobStatus.RUNNING)
                .values(status=JobStatus.FAILED, error=outcome.error,
                        finished_at=func.now(), updated_at=func.now())
                .returning(Job.id)
            ).scalar_one_or_none()
            if failed is not None and outcome.ledger is not None:
                # It failed after the engine worked on it: what ran is billed, once.
                session.execute(insert(LedgerEntry).values(
                    **outcome.ledger, job_id=outcome.job.id, tenant_id=outcome.job.tenant_id,
                    submission_id=outcome.job.submission_id, batch_id=batch.id))
    answer_followers(session, batch.id, outcomes)
    if cache is not None:
        # Copies answered above need no entry of their own: their leader's is the same.
        fill_result_cache(session, cache, batch.model, succeeded)
    if also is not None:
        also(session)  # e.g. semantic cache fills: visible together with the results
    session.execute(
        update(Batch)
        .where(Batch.id == batch.id)
        .values(status=BatchStatus.DONE, engine_seconds=engine_seconds, finished_at=func.now(),
                lease_expires_at=None)
    )
    session.commit()
    return True


def release_undelivered(session: Session, batch_ids: Sequence[uuid.UUID]) -> None:
    """Batches whose doorbell this process took but will never answer (it is shutting
    down with them still in its local queue): mark them never sent, so the next sweep
    sends them again at once instead of after redispatch_after_seconds. They were not
    claimed, so no attempt is burned. The caller commits."""
    session.execute(
        update(Batch).where(Batch.id.in_(batch_ids), Batch.status == BatchStatus.PENDING)
        .values(dispatched_at=None)
    )


def mark_dispatched(session: Session, batch_ids: Sequence[uuid.UUID]) -> None:
    session.execute(
        update(Batch).where(Batch.id.in_(batch_ids)).values(dispatched_at=func.now())
    )
    session.commit()


@dataclass(frozen=True)
class SweepResult:
    requeued: list[tuple[uuid.UUID, str]]  # (batch id, model) to dispatch again
    failed: list[uuid.UUID]


def sweep_expired_leases(
    session: Session, max_attempts: int, redispatch_after_seconds: float
) -> SweepResult:
    """Hand back batches whose worker stopped renewing its lease, and re-send batches whose
    task message seems lost. A batch out of attempts fails its jobs instead."""
    now = func.now()
    expired = session.execute(
        select(Batch.id, Batch.model, Batch.attempts)
        .where(Batch.status == BatchStatus.RUNNING, Batch.lease_expires_at < now)
        .with_for_update(skip_locked=True)
    ).all()
    requeued: list[tuple[uuid.UUID, str]] = []
    failed: list[uuid.UUID] = []
    for batch_id, model, attempts in expired:
        if attempts >= max_attempts:
            failed.append(batch_id)
            session.execute(
                update(Batch).where(Batch.id == batch_id)
                .values(status=BatchStatus.FAILED, claim_token=None, finished_at=now)
            )
            session.execute(
                update(Job)
                .where(Job.batch_id == batch_id,
                       Job.status.in_([JobStatus.BATCHED, JobStatus.RUNNING]))
                .values(status=JobStatus.FAILED, finished_at=now, updated_at=now,
                        error={"code": "max_attempts_exceeded",
                               "message": f"the batch was attempted {attempts} times and its "
                                          "worker was lost each time"})
            )
        else:
            requeued.append((batch_id, model))
            session.execute(
                update(Batch).where(Batch.id == batch_id)
                .values(status=BatchStatus.PENDING, claim_token=None, worker_id=None,
                        lease_expires_at=None, dispatched_at=now)
            )
            session.execute(
                update(Job)
                .where(Job.batch_id == batch_id, Job.status == JobStatus.RUNNING)
                .values(status=JobStatus.BATCHED, updated_at=now)
            )
    stale = session.execute(
        update(Batch)
        .where(
            and_(
                Batch.status == BatchStatus.PENDING,
                or_(Batch.dispatched_at.is_(None),  # released undelivered at a shutdown
                    Batch.dispatched_at < now - timedelta(seconds=redispatch_after_seconds)),
            )
        )
        .values(dispatched_at=now)
        .returning(Batch.id, Batch.model)
    ).all()
    requeued.extend((row[0], row[1]) for row in stale)
    session.commit()
    return SweepResult(requeued=requeued, failed=failed)
