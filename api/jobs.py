"""The native jobs API: submit one job or many, read a job or a submission back."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from api.deps import (
    IdempotencyKey,
    Tenant,
    cache_of,
    limits_of,
    policy_of,
    replayed_response,
    sessions_of,
    settings_of,
    store_of,
)
from api.direct_route import DirectCreateRoute
from api.errors import error_responses
from api.intake_caps import CapsCache, client_retry_count, prepared_jobs, prepared_jobs_async
from api.json_body import JsonBodyRoute
from api.links import links, read_by_id
from api.schemas import BulkAccepted, BulkJobsRequest, JobAccepted, JobOut, SubmissionOut
from api.webhooks import checked_callback
from intake.fast_jobs import plain_job
from intake.group_commit import GroupCommitWriter
from intake.max_tokens_caps import JobCaps
from intake.schema import JobRequest
from intake.service import body_hash, jobs_for_bulk, jobs_for_requests, request_hash, submit
from models.batches import progress_of
from models.status import SubmissionStatus
from models.submissions import NewJob, get_job, get_submission
from models.tenants import TenantRef
from penny.errors import InvalidRequest, NotFound, StateConflict
from penny.settings import Settings
from workers.finalize import output_keys

router = APIRouter(prefix="/v1", route_class=JsonBodyRoute,
                   responses=error_responses(400, 401, 402, 404, 409, 413, 422, 429))


def _parse_id(raw: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound(f"no {what} with id {raw!r}") from None


def _mark_replay(response: Response, replayed: bool) -> None:
    if replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"


async def create_job(
    body: JobRequest, request: Request, tenant: Tenant, idempotency_key: IdempotencyKey = None,
) -> Response:
    """Async: with nothing to read per request (no Idempotency-Key, no limit or budget for
    the tenant) the job goes to the group-commit writer and this waits for its commit on
    the event loop, no thread involved. Otherwise the transaction of its own runs in the
    thread pool."""
    jobs = await prepared_jobs_async(request, tenant.id,
                                     jobs_for_requests([body], limits_of(request)))
    payload_hash = (request_hash(body.model_dump(mode="json")) if idempotency_key
                    else body_hash(await request.body()))
    writer = _group_writer(request, tenant) if idempotency_key is None else None
    if writer is not None:
        return await _group_committed(writer, tenant, jobs[0], payload_hash)
    answer, replayed = await run_in_threadpool(_create_job, request, tenant, idempotency_key,
                                               jobs, payload_hash)
    return _accepted(answer, replayed)


def _group_writer(request: Request, tenant: TenantRef) -> GroupCommitWriter | None:
    """The group-commit writer, when a submission of `tenant` without an Idempotency-Key
    may take it: nothing to count or lock per tenant (no queued-jobs limit, no budget)."""
    writer: GroupCommitWriter | None = request.app.state.group_commit
    policy = policy_of(request)
    if writer is None or policy.max_queued_jobs is not None or tenant.name in policy.budgets:
        return None
    return writer


async def _group_committed(writer: GroupCommitWriter, tenant: TenantRef, job: NewJob,
                           payload_hash: str) -> Response:
    stored = await writer.submit(tenant, job, payload_hash)
    return _accepted(JobAccepted(id=str(stored.job_id),
                                 status="succeeded" if stored.from_cache else "queued",
                                 submission_id=str(stored.submission_id)), replayed=False)


async def _create_plain_job(document: Any, request: Request, tenant: TenantRef
                            ) -> Response | None:
    """`create_job` for a plain body (`intake.fast_jobs`: a prompt or chat messages and
    the common fields), built without the pydantic model: the same job, with the
    tenant's caps and the retry header, to the group writer. None when the body is not
    plain or not valid, or the job needs more than the group writer (then `create_job`
    takes it, and words any error)."""
    writer = _group_writer(request, tenant)
    caps_cache: CapsCache = request.app.state.max_tokens_caps
    caps = caps_cache.known(tenant.id)  # unknown: read in the thread pool by create_job
    if writer is None or caps is None:
        return None
    job = plain_job(document, 0, limits_of(request),
                    caps=JobCaps(caps, caps_cache.feature_tag) if caps else None)
    if job is None:
        return None
    retries = client_retry_count(request)
    if retries is not None:
        job = replace(job, client_retry_count=retries)
    return await _group_committed(writer, tenant, job, body_hash(await request.body()))


class _SingleJobRoute(DirectCreateRoute):
    async def shortcut(self, document: Any, request: Request, tenant: Any) -> Response | None:
        return await _create_plain_job(document, request, tenant)


# Every single job comes this way: past FastAPI's generic handling when nothing is unusual.
router.add_api_route(
    "/jobs", create_job, methods=["POST"], status_code=202, response_model=JobAccepted,
    route_class_override=_SingleJobRoute, responses={
        **replayed_response(JobAccepted), **links(
            202, GetJob=read_by_id("/v1/jobs/{job_id}", "job_id"),
            GetSubmission=read_by_id("/v1/submissions/{submission_id}", "submission_id",
                                     "$response.body#/submission_id"))})


def _accepted(answer: JobAccepted, replayed: bool) -> Response:
    """The answer serialised here, once: the declared `response_model` documents it, and
    a Response returned as is skips FastAPI's validating the answer again."""
    return Response(answer.model_dump_json(), status_code=200 if replayed else 202,
                    media_type="application/json",
                    headers={"Idempotent-Replayed": "true"} if replayed else None)


def _create_job(request: Request, tenant: TenantRef, idempotency_key: str | None,
                jobs: list[NewJob], payload_hash: str) -> tuple[JobAccepted, bool]:
    with sessions_of(request)() as session:
        stored = submit(
            session, tenant=tenant, kind="job", jobs=jobs,
            payload_hash=payload_hash,
            idempotency_key=idempotency_key, policy=policy_of(request),
            cache=cache_of(request),
        )
        # Answered from the exact result cache: already done, result and ledger written.
        status = "succeeded" if stored.from_cache else "queued"
        if stored.replayed:
            view = get_job(session, stored.submission.tenant_id, stored.job_ids[0])
            status = view.job.status if view else status
    return JobAccepted(id=str(stored.job_ids[0]), status=status,
                       submission_id=str(stored.submission.id),
                       warnings=stored.submission.warnings or []), stored.replayed


@router.post("/jobs/bulk", status_code=202, responses={
    **replayed_response(BulkAccepted), **links(
        202,
        GetFirstJob=read_by_id("/v1/jobs/{job_id}", "job_id", "$response.body#/job_ids/0"),
        GetSubmission=read_by_id("/v1/submissions/{submission_id}", "submission_id",
                                 "$response.body#/submission_id"))})
async def create_jobs(
    body: BulkJobsRequest, request: Request, response: Response, tenant: Tenant,
    idempotency_key: IdempotencyKey = None,
) -> BulkAccepted:
    raw = await request.body()  # already read: the route parsed it
    return await run_in_threadpool(_create_jobs, body, request, response, tenant,
                                   idempotency_key, raw)


def _create_jobs(body: BulkJobsRequest, request: Request, response: Response,
                 tenant: TenantRef, idempotency_key: str | None, raw: bytes) -> BulkAccepted:
    settings: Settings = request.app.state.settings
    if len(body.jobs) > settings.max_bulk_jobs:
        raise InvalidRequest(
            f"{len(body.jobs)} jobs in one request; the limit is {settings.max_bulk_jobs}",
            param="jobs",
        )
    items = body.jobs
    if body.cache is not None:
        items = [{"cache": body.cache.value, **item} if isinstance(item, dict) else item
                 for item in items]
    # The validated requests are kept only for what a key's replay is compared by.
    requests, jobs = jobs_for_bulk(items, limits_of(request),
                                   keep_requests=idempotency_key is not None)
    jobs = prepared_jobs(request, tenant.id, jobs)
    callback_url = checked_callback(request, body.callback_url)
    with sessions_of(request)() as session:
        stored = submit(
            session, tenant=tenant, kind="bulk", jobs=jobs,
            payload_hash=request_hash({"jobs": [r.model_dump(mode="json") for r in requests],
                                       "callback_url": body.callback_url})
            if idempotency_key else body_hash(raw),
            idempotency_key=idempotency_key, policy=policy_of(request),
            cache=cache_of(request),
            columns={"callback_url": callback_url} if callback_url else None,
        )
    _mark_replay(response, stored.replayed)
    return BulkAccepted(submission_id=str(stored.submission.id),
                        job_ids=[str(j) for j in stored.job_ids], count=len(stored.job_ids),
                        from_cache=sorted(str(j) for j in stored.from_cache),
                        warnings=stored.submission.warnings or [])


@router.get("/jobs/{job_id}")
def read_job(job_id: str, request: Request, tenant: Tenant) -> JobOut:
    parsed = _parse_id(job_id, "job")
    with sessions_of(request)() as session:
        view = get_job(session, tenant.id, parsed)
    if view is None:
        raise NotFound(f"no job with id {job_id!r}", param="job_id")
    return JobOut.from_view(view)


@router.get("/submissions/{submission_id}")
def read_submission(submission_id: str, request: Request, tenant: Tenant) -> SubmissionOut:
    parsed = _parse_id(submission_id, "submission")
    with sessions_of(request)() as session:
        row = get_submission(session, tenant.id, parsed)
        if row is None:
            raise NotFound(f"no submission with id {submission_id!r}", param="submission_id")
        progress = progress_of(session, [parsed])[parsed]
        out = SubmissionOut.from_row(row, progress.counts, progress.cost.as_dict())
    seconds = settings_of(request).presigned_url_seconds
    links = {name: url for name, uri in (out.outputs or {}).items()
             if (url := store_of(request).download_url(uri, seconds)) is not None}
    out.output_urls = links or None
    return out


OUTPUT_FILES = {"results": "application/jsonl", "ledger_json": "application/json",
                "ledger_csv": "text/csv", "results_csv": "text/csv"}


@router.get("/submissions/{submission_id}/{output}", response_class=Response, responses={
    200: {"description": "The file", "content": {media: {} for media in OUTPUT_FILES.values()}}})
def read_submission_output(submission_id: str, output: str, request: Request,
                           tenant: Tenant) -> Response:
    """A finished submission's results.jsonl, ledger.json or ledger.csv (and a CSV
    upload's results.csv), read from the object store (for a client that cannot read it
    there)."""
    parsed = _parse_id(submission_id, "submission")
    if output not in OUTPUT_FILES:
        raise NotFound(f"no output {output!r}: one of {', '.join(OUTPUT_FILES)}",
                       param="output")
    with sessions_of(request)() as session:
        row = get_submission(session, tenant.id, parsed)
    if row is None:
        raise NotFound(f"no submission with id {submission_id!r}", param="submission_id")
    if row.status != SubmissionStatus.COMPLETED:
        raise StateConflict(f"submission {submission_id} is {row.status}; its outputs are "
                            "written when every job has finished")
    if output not in (row.outputs or {}):  # results_csv: CSV uploads only
        raise NotFound(f"submission {submission_id} has no {output} (only a CSV upload's "
                       "results come back as CSV)", param="output")
    data = store_of(request).get(output_keys(row.id)[output])
    return Response(data, media_type=OUTPUT_FILES[output])
