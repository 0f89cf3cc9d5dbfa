"""Writing validated work to the queue. The job rows are committed before intake answers,
so an accepted job can never be lost and a retried request can never be billed twice."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from cache.keys import CachePolicy
from intake.embeddings import EmbeddingJobRequest
from intake.files import LineError, LineOutcome
from intake.limits import IntakeLimits, resolve_model
from intake.schema import JobRequest, estimate_tokens
from models.result_cache import tenant_with_cached_answers
from models.submissions import (
    CacheLookup,
    NewJob,
    StoredSubmission,
    ensure_tenant,
    find_by_idempotency_key,
    insert_submission,
    job_ids_of,
    lookup_keys,
)
from penny.errors import IdempotencyConflict, InvalidRequest, PennyError


def request_hash(payload: Any) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def new_job(line_no: int, request: JobRequest, model: str) -> NewJob:
    return NewJob(
        line_no=line_no,
        model=model,
        request=request.engine_request(),
        estimated_tokens=estimate_tokens(request),
        custom_id=request.custom_id,
        tags=dict(request.metadata),
        priority=request.priority,
        complete_within=request.complete_within(),
        cache_mode=request.cache,
    )


def embedding_job(line_no: int, request: EmbeddingJobRequest) -> NewJob:
    return NewJob(
        line_no=line_no,
        model=request.model,
        request=request.engine_request(),
        estimated_tokens=request.estimated_tokens(),
        custom_id=request.custom_id,
        cache_mode=request.cache,
    )


def _failed_line(line_no: int, model: str, code: str, message: str, raw: str) -> NewJob:
    return NewJob(
        line_no=line_no,
        model=model,
        request={"raw": raw[:2000]},
        estimated_tokens=0,
        error={"code": code, "message": message, "line": line_no},
    )


def jobs_for_requests(requests: Sequence[JobRequest], limits: IntakeLimits) -> list[NewJob]:
    """All or nothing: any bad item rejects the request, naming every bad item."""
    if len(requests) == 1:  # a single job's error is the answer itself, with its own kind
        return [new_job(0, requests[0], resolve_model(requests[0], limits))]
    jobs: list[NewJob] = []
    problems: list[dict[str, object]] = []
    for index, request in enumerate(requests):
        try:
            jobs.append(new_job(index, request, resolve_model(request, limits)))
        except PennyError as error:
            problems.append(
                {"index": index, "code": error.code, "message": error.message,
                 "param": error.param}
            )
    if problems:
        raise InvalidRequest(
            f"{len(problems)} of {len(requests)} jobs are invalid; nothing was queued",
            param="jobs",
            details=problems,
        )
    return jobs


def jobs_for_file(outcomes: Sequence[LineOutcome], limits: IntakeLimits) -> list[NewJob]:
    """Every line becomes a job; a bad line becomes a failed job that names its line."""
    jobs: list[NewJob] = []
    for outcome in outcomes:
        if isinstance(outcome, LineError):
            jobs.append(
                _failed_line(
                    outcome.line_no, limits.default_model, outcome.code, outcome.message,
                    outcome.raw,
                )
            )
            continue
        try:
            model = resolve_model(outcome.request, limits)
        except PennyError as error:
            jobs.append(
                _failed_line(
                    outcome.line_no, outcome.request.model or limits.default_model,
                    error.code, error.message, outcome.request.model_dump_json(),
                )
            )
            continue
        job = new_job(outcome.line_no, outcome.request, model)
        jobs.append(job)
    return jobs


def submit(
    session: Session,
    *,
    tenant: str,
    kind: str,
    jobs: Sequence[NewJob],
    payload_hash: str,
    idempotency_key: str | None = None,
    source_name: str | None = None,
    columns: Mapping[str, Any] | None = None,
    cache: CachePolicy | None,
) -> StoredSubmission:
    """Queue `jobs` as one submission and commit; replay the original on a repeated key.
    With `cache`, jobs the exact result cache answers are done in this same transaction
    (None: every job is queued, as for a caller that must not read the cache)."""
    keys = lookup_keys(jobs, cache)
    ensure_tenant(session, tenant)
    # The cache lookup rides on reading the tenant's id: no extra round trip.
    tenant_id, answers = tenant_with_cached_answers(session, tenant,
                                                    {k for k in keys if k is not None})
    stored = insert_submission(
        session,
        tenant_id=tenant_id,
        kind=kind,
        request_hash=payload_hash,
        jobs=jobs,
        idempotency_key=idempotency_key,
        source_name=source_name,
        columns=columns,
        cached=CacheLookup(keys, answers),
    )
    if stored is not None:
        session.commit()
        return stored
    session.rollback()
    assert idempotency_key is not None, "only a taken idempotency key makes the insert a no-op"
    existing = find_by_idempotency_key(session, tenant_id, idempotency_key)
    if existing is None:  # pragma: no cover - the conflicting row cannot vanish
        raise PennyError("idempotent submission disappeared")
    if existing.request_hash != payload_hash:
        raise IdempotencyConflict(
            "this Idempotency-Key was already used with a different request body",
            param="Idempotency-Key",
        )
    return StoredSubmission(
        submission=existing, job_ids=job_ids_of(session, existing.id), replayed=True
    )
