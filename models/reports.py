"""Queries behind outputs and progress: which submissions are done, and their records."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session

from ledger.attribution import MECHANISMS, saving_column
from ledger.report import JobRecord
from models.status import TERMINAL_JOB_STATUSES, SubmissionStatus
from models.tables import Job, LedgerEntry, Result, Submission


def take_finished_submissions(
    session: Session,
    submission_ids: Sequence[uuid.UUID] | None = None,
    stuck_after_seconds: float = 300.0,
) -> list[uuid.UUID]:
    """Mark submissions whose jobs are all terminal as finalizing and return them.

    Also takes back submissions left in `finalizing` by a process that died mid-write.
    Only one caller wins each submission.
    """
    unfinished = exists().where(
        Job.submission_id == Submission.id, Job.status.not_in(list(TERMINAL_JOB_STATUSES))
    )
    open_or_stuck = (Submission.status == SubmissionStatus.OPEN) | (
        (Submission.status == SubmissionStatus.FINALIZING)
        & (Submission.finalizing_since < func.now() - timedelta(seconds=stuck_after_seconds))
    )
    query = update(Submission).where(open_or_stuck, ~unfinished)
    if submission_ids is not None:
        query = query.where(Submission.id.in_(submission_ids))
    taken = session.execute(
        query.values(status=SubmissionStatus.FINALIZING, finalizing_since=func.now())
        .returning(Submission.id)
    ).scalars().all()
    session.commit()
    return list(taken)


def submission_rows(
    session: Session, submission_id: uuid.UUID, *, cascade_attempts: bool = False
) -> list[tuple[Job, Result | None, LedgerEntry | None]]:
    """Every job of a submission in line order, with its result and ledger row if any;
    with `cascade_attempts`, also the escalated attempts (billed, answered elsewhere),
    each just before the job it escalated."""
    query = (
        select(Job, Result, LedgerEntry)
        .outerjoin(Result, Result.job_id == Job.id)
        .outerjoin(LedgerEntry, LedgerEntry.job_id == Job.id)
        .where(Job.submission_id == submission_id)
        .order_by(Job.line_no, Job.cascade_of.is_(None), Job.created_at)
    )
    if not cascade_attempts:
        query = query.where(Job.cascade_of.is_(None))
    rows = session.execute(query)
    return [(job, result, ledger) for job, result, ledger in rows]


def counterfactual_of(ledger: LedgerEntry) -> dict[str, Any]:
    """A ledger row's counterfactual fields, as `JobRecord` and `LineRecord` take them."""
    return {
        "naive_cost_usd": ledger.naive_cost_usd,
        "savings": {m: getattr(ledger, saving_column(m)) for m in MECHANISMS},
        "unexplained_usd": ledger.unexplained_usd,
        "baseline_model": ledger.baseline_model,
        "price_card_id": ledger.price_card_id,
        "calibration_id": ledger.calibration_id,
    }


def job_records(session: Session, submission_id: uuid.UUID) -> list[JobRecord]:
    records = []
    for job, result, ledger in submission_rows(session, submission_id, cascade_attempts=True):
        records.append(
            JobRecord(
                job_id=str(job.id),
                line=job.line_no,
                custom_id=job.custom_id,
                model=job.model,
                status=job.status,
                tags=job.tags,
                text=result.text if result else None,
                finish_reason=result.finish_reason if result else None,
                error=job.error,
                input_tokens=ledger.input_tokens if ledger else 0,
                cached_tokens=ledger.cached_tokens if ledger else 0,
                output_tokens=ledger.output_tokens if ledger else 0,
                engine_seconds=ledger.engine_seconds if ledger else 0.0,
                cost_usd=ledger.cost_usd if ledger else Decimal(0),
                list_cost_usd=ledger.list_cost_usd if ledger else Decimal(0),
                billed=ledger is not None,
                served_by=ledger.served_by if ledger else "engine",
                single_flight_saved_usd=ledger.single_flight_saved_usd if ledger else Decimal(0),
                cache_saved_usd=ledger.cache_saved_usd if ledger else Decimal(0),
                source_job_id=str(ledger.source_job_id) if ledger and ledger.source_job_id
                else None,
                input_row=job.input_row,
                **(counterfactual_of(ledger) if ledger else {}),
                route=ledger.route if ledger else None,
                cache_entry_id=str(ledger.cache_entry_id) if ledger and ledger.cache_entry_id
                else None,
                cache_similarity=ledger.cache_similarity if ledger else None,
            )
        )
    return records


def input_columns_of(session: Session, submission_id: uuid.UUID) -> list[str] | None:
    """A CSV upload's header; None for every other kind of submission."""
    columns: list[str] | None = session.execute(
        select(Submission.input_columns).where(Submission.id == submission_id)
    ).scalar_one()
    return columns


def complete_submission(
    session: Session, submission_id: uuid.UUID, outputs: dict[str, str]
) -> None:
    session.execute(
        update(Submission)
        .where(Submission.id == submission_id)
        .values(status=SubmissionStatus.COMPLETED, outputs=outputs, completed_at=func.now())
    )
    session.commit()
