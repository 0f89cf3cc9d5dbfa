"""The native jobs API: submit one job or many, read a job or a submission back."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response

from api.deps import Tenant, cache_of, limits_of, sessions_of
from api.schemas import BulkAccepted, BulkJobsRequest, JobAccepted, JobOut, SubmissionOut
from intake.schema import JobRequest
from intake.service import jobs_for_requests, request_hash, submit
from models.submissions import get_job, get_submission, status_counts, tenant_id_for
from penny.errors import InvalidRequest, NotFound
from penny.settings import Settings

router = APIRouter(prefix="/v1")

IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
]


def _parse_id(raw: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound(f"no {what} with id {raw!r}") from None


def _mark_replay(response: Response, replayed: bool) -> None:
    if replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"


@router.post("/jobs", status_code=202)
def create_job(
    body: JobRequest, request: Request, response: Response, tenant: Tenant,
    idempotency_key: IdempotencyKey = None,
) -> JobAccepted:
    jobs = jobs_for_requests([body], limits_of(request))
    with sessions_of(request)() as session:
        stored = submit(
            session, tenant=tenant, kind="job", jobs=jobs,
            payload_hash=request_hash(body.model_dump(mode="json")),
            idempotency_key=idempotency_key, cache=cache_of(request),
        )
        # Answered from the exact result cache: already done, result and ledger written.
        status = "succeeded" if stored.from_cache else "queued"
        if stored.replayed:
            view = get_job(session, stored.submission.tenant_id, stored.job_ids[0])
            status = view.job.status if view else status
    _mark_replay(response, stored.replayed)
    return JobAccepted(id=str(stored.job_ids[0]), status=status,
                       submission_id=str(stored.submission.id))


@router.post("/jobs/bulk", status_code=202)
def create_jobs(
    body: BulkJobsRequest, request: Request, response: Response, tenant: Tenant,
    idempotency_key: IdempotencyKey = None,
) -> BulkAccepted:
    settings: Settings = request.app.state.settings
    if len(body.jobs) > settings.max_bulk_jobs:
        raise InvalidRequest(
            f"{len(body.jobs)} jobs in one request; the limit is {settings.max_bulk_jobs}",
            param="jobs",
        )
    jobs = jobs_for_requests(body.jobs, limits_of(request))
    with sessions_of(request)() as session:
        stored = submit(
            session, tenant=tenant, kind="bulk", jobs=jobs,
            payload_hash=request_hash(body.model_dump(mode="json")),
            idempotency_key=idempotency_key, cache=cache_of(request),
        )
    _mark_replay(response, stored.replayed)
    return BulkAccepted(submission_id=str(stored.submission.id),
                        job_ids=[str(j) for j in stored.job_ids], count=len(stored.job_ids),
                        from_cache=sorted(str(j) for j in stored.from_cache))


@router.get("/jobs/{job_id}")
def read_job(job_id: str, request: Request, tenant: Tenant) -> JobOut:
    parsed = _parse_id(job_id, "job")
    with sessions_of(request)() as session:
        view = get_job(session, tenant_id_for(session, tenant), parsed)
        session.commit()
    if view is None:
        raise NotFound(f"no job with id {job_id!r}", param="job_id")
    return JobOut.from_view(view)


@router.get("/submissions/{submission_id}")
def read_submission(submission_id: str, request: Request, tenant: Tenant) -> SubmissionOut:
    parsed = _parse_id(submission_id, "submission")
    with sessions_of(request)() as session:
        row = get_submission(session, tenant_id_for(session, tenant), parsed)
        session.commit()
        if row is None:
            raise NotFound(f"no submission with id {submission_id!r}", param="submission_id")
        return SubmissionOut.from_row(row, status_counts(session, parsed))
