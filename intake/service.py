"""Writing validated work to the queue. The job rows are committed before intake answers,
so an accepted job can never be lost and a retried request can never be billed twice."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from cache.keys import CacheMode, CachePolicy
from intake.admission import IntakePolicy, admit
from intake.cache_option import asked_cache_mode, cache_mode_for
from intake.compress_option import compression_for
from intake.embeddings import EmbeddingJobRequest
from intake.fast_jobs import plain_job
from intake.files import LineError, LineOutcome
from intake.limits import IntakeLimits, resolve_model
from intake.routing import CASCADE_MODE, job_route
from intake.schema import JobRequest, estimate_tokens
from intake.text import escape_unstorable
from models.result_cache import find_cached_answers
from models.submissions import (
    CacheLookup,
    NewJob,
    StoredSubmission,
    find_by_idempotency_key,
    forget_idempotency_key,
    insert_submission,
    job_ids_of,
    job_keys,
    note_replay,
)
from models.tenants import TenantRef
from observability import metrics
from penny.errors import IdempotencyConflict, InvalidRequest, PennyError


def request_hash(payload: Any) -> str:
    """What a repeated Idempotency-Key's request is compared by: the request as validated
    (defaults filled in), in canonical JSON."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def body_hash(raw: bytes) -> str:
    """The hash kept for a submission sent without an Idempotency-Key: nothing is ever
    compared with it, so it is the body's bytes as sent, not `request_hash`'s canonical
    form (which cost a full re-serialisation of every job)."""
    return hashlib.sha256(raw).hexdigest()


def new_job(line_no: int, request: JobRequest, model: str,
            limits: IntakeLimits | None = None,
            batch_tags: Mapping[str, Any] | None = None) -> NewJob:
    """`model` is the resolved one (`resolve_model`): for `auto` or `cascade`, a tier;
    `limits` what it was resolved with, whose per-tag policies (routing, compression,
    cache) the job takes. `batch_tags`: the tags its batch gives every job (an OpenAI
    batch's metadata; the job's own metadata wins a key both name), which the cache policy
    reads with the job's own."""
    route = job_route(request, model, limits.tag_routes if limits else ())
    compress = compression_for(request.compress, request.metadata,
                               limits.tag_compression if limits else ())
    stored = request.engine_request()
    if compress is not None and request.compress is None:
        stored["compress"] = compress.stored()
    tags = {**batch_tags, **request.metadata} if batch_tags else dict(request.metadata)
    cache_mode: str = cache_mode_for(asked_cache_mode(request), tags,
                                     limits.tag_cache if limits else ())
    if route is not None and route["mode"] == CASCADE_MODE:
        # The cascade reads the answer's logprobs, so its jobs (and only they) pay for
        # them; and it judges its own answer, so it neither rides another job's run nor
        # takes or leaves a cached answer of one tier.
        stored["sampling"]["logprobs"] = True
        cache_mode = CacheMode.OFF
    return NewJob(
        line_no=line_no,
        model=model,
        request=stored,
        estimated_tokens=estimate_tokens(request),
        custom_id=request.custom_id,
        tags=tags,
        priority=request.priority,
        complete_within=request.complete_within(),
        cache_mode=cache_mode,
        route=route,
        single_flight=route is None or route["mode"] != CASCADE_MODE,
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
        # The raw line is echoed as text; a NUL in it must not fail the whole insert.
        request={"raw": escape_unstorable(raw[:2000])},
        estimated_tokens=0,
        error={"code": code, "message": message, "line": line_no},
    )


def jobs_for_requests(requests: Sequence[JobRequest], limits: IntakeLimits) -> list[NewJob]:
    """All or nothing: any bad item rejects the request, naming every bad item."""
    if len(requests) == 1:  # a single job's error is the answer itself, with its own kind
        return [new_job(0, requests[0], resolve_model(requests[0], limits), limits)]
    jobs: list[NewJob] = []
    problems: list[dict[str, object]] = []
    for index, request in enumerate(requests):
        try:
            jobs.append(new_job(index, request, resolve_model(request, limits), limits))
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


def _schema_problems(index: int, error: ValidationError) -> list[dict[str, object]]:
    problems: list[dict[str, object]] = []
    for item in error.errors():
        location = escape_unstorable(".".join(str(p) for p in item["loc"]))
        param = f"jobs.{index}.{location}" if location else f"jobs.{index}"
        problems.append({"index": index, "code": "invalid_request", "param": param,
                         "message": f"{param}: {item['msg']}"})
    return problems


def jobs_for_bulk(
    items: Sequence[object], limits: IntakeLimits, *, keep_requests: bool = True
) -> tuple[list[JobRequest], list[NewJob]]:
    """`jobs_for_requests` for a bulk body's raw items: all or nothing, naming every bad
    item. Each item is validated on its own, schema and deployment limits in one pass, so
    an item with a malformed field and another naming an unknown model are both named in
    the one answer (validating the whole body first stopped at the schema errors).

    Without `keep_requests` (the caller needs the jobs only, not the validated requests
    an Idempotency-Key's hash is made of), plain valid items skip the general validator
    (`intake.fast_jobs`) and no requests come back."""
    requests: list[JobRequest] = []
    jobs: list[NewJob] = []
    problems: list[dict[str, object]] = []
    for index, item in enumerate(items):
        plain = None if keep_requests else plain_job(item, index, limits)
        if plain is not None:
            jobs.append(plain)
            continue
        try:
            request = JobRequest.model_validate(item)
        except ValidationError as error:
            problems.extend(_schema_problems(index, error))
            continue
        try:
            jobs.append(new_job(index, request, resolve_model(request, limits), limits))
            if keep_requests:
                requests.append(request)
        except PennyError as error:
            param = f"jobs.{index}.{error.param}" if error.param else f"jobs.{index}"
            problems.append({"index": index, "code": error.code, "param": param,
                             "message": error.message})
    if problems:
        bad = len({p["index"] for p in problems})
        raise InvalidRequest(
            f"{bad} of {len(items)} jobs are invalid; nothing was queued",
            param="jobs",
            details=problems,
        )
    return requests, jobs


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
        job = new_job(outcome.line_no, outcome.request, model, limits)
        jobs.append(job)
    return jobs


def submit(
    session: Session,
    *,
    tenant: TenantRef,
    kind: str,
    jobs: Sequence[NewJob],
    payload_hash: str,
    idempotency_key: str | None = None,
    source_name: str | None = None,
    columns: Mapping[str, Any] | None = None,
    policy: IntakePolicy | None = None,
    cache: CachePolicy | None = None,
) -> StoredSubmission:
    """Queue `jobs` as one submission and commit; replay the original on a repeated key.

    A duplicate sent while the original is still being written waits for it (the unique
    (tenant, key) index holds it) and then replays it. A key older than the policy's
    idempotency window is forgotten, and the request runs as a new one.

    With `cache`, jobs the exact result cache answers are done in this same transaction
    (None: every job is queued, as for a caller that must not read the cache). A replay
    answers nothing again: hits are written only with a newly inserted submission.
    """
    policy = policy or IntakePolicy()
    keys, flight_keys = job_keys(jobs, tenant.id, cache)
    wanted = {k for k in keys if k is not None}
    for _ in range(2):  # a second pass only after forgetting an expired key
        # One indexed query on (tenant, key), and only when some job may be answered.
        answers = find_cached_answers(session, tenant.id, wanted) if wanted else {}
        stored = insert_submission(
            session,
            tenant_id=tenant.id,
            kind=kind,
            request_hash=payload_hash,
            jobs=jobs,
            idempotency_key=idempotency_key,
            source_name=source_name,
            columns=columns,
            cached=CacheLookup(keys, answers, flight_keys),
        )
        if stored is not None:
            # Jobs answered from the cache are done: they take no room in the queue.
            queued = [job for job, job_id in zip(jobs, stored.job_ids, strict=True)
                      if job_id not in stored.from_cache]
            try:
                # Every job answered from the cache: nothing queued, nothing to bill.
                warnings = (admit(session, policy, tenant, queued)
                            if queued or not jobs else [])
            except PennyError:
                session.rollback()
                raise
            if warnings:
                stored.submission.warnings = warnings
            session.commit()
            metrics.record_exact_cache_hits(
                job.model for job, job_id in zip(jobs, stored.job_ids, strict=True)
                if job_id in stored.from_cache)
            return stored
        session.rollback()
        assert idempotency_key is not None, "only a taken idempotency key makes it a no-op"
        existing = find_by_idempotency_key(session, tenant.id, idempotency_key)
        if existing is None:  # pragma: no cover - the conflicting row cannot vanish
            raise PennyError("idempotent submission disappeared")
        if existing.created_at < policy.idempotency_cutoff():
            forget_idempotency_key(session, existing.id)
            session.commit()
            continue
        if existing.request_hash != payload_hash:
            raise IdempotencyConflict(
                "this Idempotency-Key was already used with a different request body",
                param="Idempotency-Key",
            )
        note_replay(session, existing.id)
        session.commit()
        return StoredSubmission(
            submission=existing, job_ids=job_ids_of(session, existing.id), replayed=True
        )
    raise PennyError("idempotency key still taken after it was forgotten")  # pragma: no cover
