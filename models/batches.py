"""Queries behind the batch APIs (OpenAI Batch, Anthropic Message Batches): reading batches
with their progress, listing them, validating, cancelling, expiring, and reading their lines
back.

A batch is a submission of kind `openai_batch` or `anthropic_batch`; its jobs are its lines.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, or_, select, tuple_, update
from sqlalchemy.orm import Session

from cache.keys import CachePolicy
from compat.records import CostFigures, LineRecord
from ledger.attribution import MECHANISMS, saving_column
from ledger.pricing import SERVED_BY_ENGINE, SERVED_BY_EXACT_CACHE, SERVED_BY_SINGLE_FLIGHT
from ledger.savings import SavingsTotals
from models.reports import submission_rows
from models.result_cache import find_cached_answers
from models.status import JobStatus, SubmissionStatus
from models.submissions import CacheLookup, InsertedJobs, NewJob, insert_jobs, job_keys
from models.tables import Job, LedgerEntry, Submission
from models.webhooks import record_end

OPENAI_KIND = "openai_batch"
ANTHROPIC_KIND = "anthropic_batch"
# A job that has not started yet can still be cancelled or expired; a running one finishes
# (and is billed), so nothing is ever half-done or billed twice.
NOT_STARTED = (JobStatus.QUEUED, JobStatus.BATCHED)
RETRYABLE = (JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED)
# However often a batch's validation has raised, it is tried again within an hour.
MAX_VALIDATION_DELAY = 3600.0


@dataclass(frozen=True)
class Progress:
    counts: dict[str, int]
    cost: CostFigures
    models: frozenset[str]


_NO_COST = CostFigures(0, 0, 0, 0.0, Decimal(0), Decimal(0))


def get_batch(
    session: Session, tenant_id: uuid.UUID, batch_id: uuid.UUID, kind: str
) -> Submission | None:
    return session.execute(
        select(Submission).where(
            Submission.id == batch_id, Submission.tenant_id == tenant_id,
            Submission.kind == kind, Submission.deleted_at.is_(None),
        )
    ).scalar_one_or_none()


@dataclass(frozen=True)
class BatchPage:
    batches: list[Submission]
    has_more: bool


def list_batches(
    session: Session,
    tenant_id: uuid.UUID,
    kind: str,
    *,
    limit: int,
    after: uuid.UUID | None = None,
    before: uuid.UUID | None = None,
) -> BatchPage:
    """Newest first. `after` pages towards older batches, `before` towards newer ones;
    keyset pagination on (created_at, id), so a page never repeats or skips a batch."""
    query = select(Submission).where(Submission.tenant_id == tenant_id, Submission.kind == kind,
                                     Submission.deleted_at.is_(None))
    key = tuple_(Submission.created_at, Submission.id)
    cursor_id = after or before
    cursor = session.get(Submission, cursor_id) if cursor_id else None
    if cursor is not None and cursor.tenant_id == tenant_id:
        mark = tuple_(cursor.created_at, cursor.id)
        query = query.where(key < mark if after else key > mark)
    if before is not None:
        rows = list(session.execute(
            query.order_by(Submission.created_at.asc(), Submission.id.asc()).limit(limit + 1)
        ).scalars())
        return BatchPage(batches=list(reversed(rows[:limit])), has_more=len(rows) > limit)
    rows = list(session.execute(
        query.order_by(Submission.created_at.desc(), Submission.id.desc()).limit(limit + 1)
    ).scalars())
    return BatchPage(batches=rows[:limit], has_more=len(rows) > limit)


def progress_of(session: Session, batch_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Progress]:
    """Job counts by state and billed totals, for many batches in two queries."""
    counts: dict[uuid.UUID, dict[str, int]] = {b: {} for b in batch_ids}
    models: dict[uuid.UUID, set[str]] = {b: set() for b in batch_ids}
    for submission_id, status, model, n in session.execute(
        select(Job.submission_id, Job.status, Job.model, func.count())
        .where(Job.submission_id.in_(batch_ids), Job.cascade_of.is_(None))
        .group_by(Job.submission_id, Job.status, Job.model)
    ):
        counts[submission_id][status] = counts[submission_id].get(status, 0) + int(n)
        models[submission_id].add(model)
    costs: dict[uuid.UUID, CostFigures] = {}
    for row in session.execute(
        select(LedgerEntry.submission_id, func.sum(LedgerEntry.input_tokens),
               func.sum(LedgerEntry.cached_tokens), func.sum(LedgerEntry.output_tokens),
               func.sum(LedgerEntry.engine_seconds), func.sum(LedgerEntry.cost_usd),
               func.sum(LedgerEntry.list_cost_usd),
               func.sum(LedgerEntry.single_flight_saved_usd),
               func.count().filter(LedgerEntry.served_by == SERVED_BY_SINGLE_FLIGHT),
               func.sum(LedgerEntry.cache_saved_usd),
               func.count().filter(LedgerEntry.served_by == SERVED_BY_EXACT_CACHE),
               func.sum(LedgerEntry.naive_cost_usd), func.sum(LedgerEntry.unexplained_usd),
               *(func.sum(getattr(LedgerEntry, saving_column(m))) for m in MECHANISMS))
        .where(LedgerEntry.submission_id.in_(batch_ids))
        .group_by(LedgerEntry.submission_id)
    ):
        savings = SavingsTotals(
            cost_usd=Decimal(row[5]), naive_cost_usd=Decimal(row[11]),
            savings={m: Decimal(str(v)) for m, v in zip(MECHANISMS, row[13:], strict=True)},
            unexplained_usd=Decimal(row[12]))
        costs[row[0]] = CostFigures(int(row[1]), int(row[2]), int(row[3]), float(row[4]),
                                    Decimal(row[5]), Decimal(row[6]), Decimal(row[7]),
                                    int(row[8]), Decimal(row[9]), int(row[10]), savings)
    return {b: Progress(counts[b], costs.get(b, _NO_COST), frozenset(models[b]))
            for b in batch_ids}


def _stop_unstarted(
    session: Session, submission_id: uuid.UUID, status: JobStatus, code: str, message: str
) -> int:
    result = session.execute(
        update(Job)
        .where(Job.submission_id == submission_id, Job.status.in_(NOT_STARTED))
        .values(status=status, error={"code": code, "message": message},
                finished_at=func.now(), updated_at=func.now())
        .returning(Job.id)
    )
    return len(result.all())


def claim_validating_batch(session: Session) -> Submission | None:
    """The next batch waiting to be validated, locked until the caller's transaction ends.
    SKIP LOCKED: two coalescers validate two different batches, never the same one twice.
    A batch whose validation raised waits out its back-off, and batches never tried go
    before it: one poisoned batch never holds up another."""
    return session.execute(
        select(Submission).where(
            Submission.status == SubmissionStatus.VALIDATING,
            or_(Submission.validate_after.is_(None), Submission.validate_after <= func.now()))
        .order_by(Submission.validation_attempts, Submission.created_at).limit(1)
        .with_for_update(skip_locked=True)
    ).scalar_one_or_none()


def note_validation_failure(
    session: Session, submission_id: uuid.UUID, *, max_attempts: int, retry_seconds: float,
    error: dict[str, Any],
) -> int | None:
    """Count a validation run that raised. Returns the attempts so far, with the batch
    waiting retry_seconds x 2^(attempts - 1) before the next (0: it is no longer
    validating, nothing was counted); or None when this was the last allowed attempt and
    the batch failed with `error`. The caller commits."""
    attempts = session.execute(
        update(Submission)
        .where(Submission.id == submission_id,
               Submission.status == SubmissionStatus.VALIDATING)
        .values(validation_attempts=Submission.validation_attempts + 1)
        .returning(Submission.validation_attempts)
    ).scalar_one_or_none()
    if attempts is None:  # cancelled or validated meanwhile: nothing to count
        return 0
    if attempts >= max_attempts:
        fail_batch(session, submission_id, [error])
        return None
    delay = timedelta(seconds=min(retry_seconds * 2 ** (attempts - 1), MAX_VALIDATION_DELAY))
    session.execute(update(Submission).where(Submission.id == submission_id)
                    .values(validate_after=func.now() + delay))
    return attempts


def start_batch(
    session: Session, batch: Submission, jobs: list[NewJob], cache: CachePolicy | None
) -> InsertedJobs:
    """Queue a validated batch's jobs and open it; lines the exact result cache answers
    are done at once (`from_cache` of what is returned). The caller holds the batch's row lock
    (claim_validating_batch) and commits."""
    keys, flight_keys = job_keys(jobs, batch.tenant_id, cache)
    cached = CacheLookup(keys, find_cached_answers(session, batch.tenant_id,
                                                   {k for k in keys if k is not None}),
                         flight_keys)
    inserted = insert_jobs(session, batch.id, batch.tenant_id, jobs, cached)
    session.execute(
        update(Submission).where(Submission.id == batch.id)
        .values(status=SubmissionStatus.OPEN, total_jobs=len(jobs), in_progress_at=func.now())
    )
    return inserted


def fail_batch(session: Session, submission_id: uuid.UUID, errors: list[dict[str, Any]]
               ) -> None:
    """A batch whose input failed validation: nothing is queued. Its webhook event is
    queued in the same transaction. The caller commits."""
    session.execute(
        update(Submission).where(Submission.id == submission_id)
        .values(status=SubmissionStatus.FAILED, failed_at=func.now(), errors=errors)
    )
    record_end(session, submission_id, status=SubmissionStatus.FAILED, counts={},
               cost=_NO_COST)


def open_without_jobs(session: Session, submission_id: uuid.UUID) -> None:
    """A batch cancelled while it validated: open with no jobs, so finalize ends it as any
    other cancelled batch. The caller commits."""
    session.execute(
        update(Submission).where(Submission.id == submission_id)
        .values(status=SubmissionStatus.OPEN, total_jobs=0)
    )


def cancel_batch(session: Session, submission_id: uuid.UUID) -> bool:
    """Ask a batch to stop: jobs not yet started are cancelled at once; running ones finish
    and are kept. False (and nothing changes) when the batch is past cancelling.
    A batch still validating has no jobs yet; its validator sees the mark and queues none.
    (While a validator holds the batch this waits for it, then cancels the jobs it queued.)
    The caller commits."""
    marked = session.execute(
        update(Submission)
        .where(Submission.id == submission_id,
               Submission.status.in_([SubmissionStatus.OPEN, SubmissionStatus.VALIDATING]),
               Submission.expired_at.is_(None))
        .values(cancelling_at=func.coalesce(Submission.cancelling_at, func.now()))
        .returning(Submission.id)
    ).scalar_one_or_none()
    if marked is None:
        return False
    _stop_unstarted(session, submission_id, JobStatus.CANCELLED, "batch_cancelled",
                    "the batch was cancelled before this request ran")
    return True


def expire_overdue_batches(session: Session) -> list[uuid.UUID]:
    """Expire the unstarted jobs of every open batch whose completion window ran out."""
    overdue = session.execute(
        update(Submission)
        .where(Submission.status == SubmissionStatus.OPEN, Submission.expires_at.is_not(None),
               Submission.expires_at < func.now(), Submission.expired_at.is_(None),
               Submission.cancelling_at.is_(None))
        .values(expired_at=func.now())
        .returning(Submission.id)
    ).scalars().all()
    for submission_id in overdue:
        _stop_unstarted(session, submission_id, JobStatus.EXPIRED, "batch_expired",
                        "the batch's completion window ran out before this request ran")
    session.commit()
    return list(overdue)


def _row_savings(ledger: LedgerEntry) -> SavingsTotals:
    return SavingsTotals(
        cost_usd=ledger.cost_usd, naive_cost_usd=ledger.naive_cost_usd,
        savings={m: getattr(ledger, saving_column(m)) for m in MECHANISMS},
        unexplained_usd=ledger.unexplained_usd)


def line_records(session: Session, submission_id: uuid.UUID) -> list[LineRecord]:
    return [
        LineRecord(
            job_id=str(job.id),
            line=job.line_no,
            custom_id=job.custom_id or "",
            model=job.model,
            status=job.status,
            text=result.text if result else None,
            finish_reason=result.finish_reason if result else None,
            error=job.error,
            prompt_tokens=result.prompt_tokens if result else 0,
            cached_tokens=result.cached_tokens if result else 0,
            output_tokens=result.output_tokens if result else 0,
            engine_seconds=ledger.engine_seconds if ledger else 0.0,
            cost_usd=ledger.cost_usd if ledger else None,
            list_cost_usd=ledger.list_cost_usd if ledger else None,
            finished_at=job.finished_at,
            served_by=ledger.served_by if ledger else SERVED_BY_ENGINE,
            single_flight_saved_usd=ledger.single_flight_saved_usd if ledger else Decimal(0),
            cache_saved_usd=ledger.cache_saved_usd if ledger else Decimal(0),
            source_job_id=str(ledger.source_job_id) if ledger and ledger.source_job_id
            else None,
            cache_entry_id=str(ledger.cache_entry_id) if ledger and ledger.cache_entry_id
            else None,
            cache_similarity=ledger.cache_similarity if ledger else None,
            embedding=result.embedding if result else None,
            embedding_dimensions=result.embedding_dimensions if result else None,
            encoding_format=str(job.request.get("encoding_format") or "float"),
            token_logprobs=result.token_logprobs if result else None,
            choices=result.choices if result else None,
            asked_logprobs="top_logprobs" in (job.request.get("sampling") or {}),
            offered_tools=tuple(str(tool["function"]["name"])
                                for tool in job.request.get("tools") or ()),
            savings=_row_savings(ledger) if ledger else SavingsTotals(),
        )
        for job, result, ledger in submission_rows(session, submission_id)
    ]


def retryable_jobs(session: Session, submission_id: uuid.UUID) -> list[Job]:
    return list(session.execute(
        select(Job).where(Job.submission_id == submission_id, Job.status.in_(RETRYABLE))
        .order_by(Job.line_no)
    ).scalars())


def set_batch_files(
    session: Session, submission_id: uuid.UUID, output_file_id: str | None,
    error_file_id: str | None,
) -> None:
    session.execute(
        update(Submission).where(Submission.id == submission_id)
        .values(output_file_id=output_file_id, error_file_id=error_file_id)
    )


def delete_batch(session: Session, submission_id: uuid.UUID) -> None:
    """Hide an ended batch from the API; its jobs and ledger rows stay for the books."""
    session.execute(
        update(Submission).where(Submission.id == submission_id)
        .values(deleted_at=func.now())
    )
