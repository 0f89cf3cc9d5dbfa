"""Reading back the trace contexts stored beside submissions (see
`observability.tracing`). Only asked when tracing is on."""

from __future__ import annotations

import uuid
from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.tables import Job, Submission


def traceparents_of_jobs(session: Session, job_ids: Collection[str]) -> dict[str, str]:
    """Job id -> the traceparent of the intake request that submitted it (jobs whose
    submission has none are left out)."""
    if not job_ids:
        return {}
    rows = session.execute(
        select(Job.id, Submission.traceparent)
        .join(Submission, Submission.id == Job.submission_id)
        .where(Job.id.in_([uuid.UUID(job_id) for job_id in job_ids]),
               Submission.traceparent.is_not(None))
    )
    return {str(job_id): traceparent for job_id, traceparent in rows if traceparent}


def traceparents_of_submissions(session: Session,
                                submission_ids: Collection[uuid.UUID]) -> list[str]:
    if not submission_ids:
        return []
    found = session.execute(
        select(Submission.traceparent)
        .where(Submission.id.in_(submission_ids), Submission.traceparent.is_not(None))
    ).scalars()
    return [traceparent for traceparent in found if traceparent]

