"""Creating batches through the hosted-API-compatible surfaces: an OpenAI batch from an
uploaded file, an Anthropic message batch from its request list, and a retry of the lines
of a batch that did not succeed. Each is one penny submission whose jobs are its lines."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from sqlalchemy import func
from sqlalchemy.orm import Session

from cache.keys import CachePolicy
from intake.admission import IntakePolicy
from intake.anthropic_requests import parse_requests
from intake.embeddings import EmbeddingJobRequest
from intake.limits import IntakeLimits
from intake.max_tokens_caps import JobCaps
from intake.openai_lines import SERVED_ENDPOINTS, BatchLine
from intake.schema import completion_window_length
from intake.service import embedding_job, new_job, submit
from models.batches import ANTHROPIC_KIND, OPENAI_KIND, retryable_jobs
from models.files import get_file
from models.status import SubmissionStatus
from models.submissions import NewJob, StoredSubmission
from models.tables import Submission
from models.tenants import TenantRef
from penny.errors import InvalidRequest, NotFound, StateConflict

MAX_WINDOW = timedelta(hours=24)
ANTHROPIC_WINDOW = "24h"


def parse_completion_window(window: str) -> timedelta:
    """"24h" as the hosted API has it, or any shorter window such as "1h", "30m", "90s"."""
    length = completion_window_length(window)
    if length is None:
        raise InvalidRequest(f"completion_window {window!r} is not like '24h', '30m' or '90s'",
                             param="completion_window")
    if length > MAX_WINDOW:
        raise InvalidRequest(f"completion_window {window!r} is longer than 24h",
                             param="completion_window")
    return length


def line_job(line: BatchLine, limits: IntakeLimits | None = None,
             batch_tags: Mapping[str, Any] | None = None) -> NewJob:
    """`limits`: what the line's model was resolved with (its per-tag policies);
    `batch_tags`: its batch's metadata, which tags each of its jobs."""
    if isinstance(line.request, EmbeddingJobRequest):
        job = embedding_job(line.line, line.request)
        return replace(job, tags=dict(batch_tags)) if batch_tags else job
    return new_job(line.line, line.request, line.model, limits, batch_tags)


@dataclass(frozen=True)
class OpenAIBatchParams:
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = None
    output_expires_after_seconds: int | None = None
    callback_url: str | None = None


def create_openai_batch(
    session: Session,
    *,
    tenant: TenantRef,
    params: OpenAIBatchParams,
    payload_hash: str,
    idempotency_key: str | None = None,
    policy: IntakePolicy | None = None,
) -> StoredSubmission:
    """Store the batch as `validating` with nothing queued, after the checks that need no
    parsing (endpoint, window, input file). Parsing a file of up to 50,000 lines is the
    coalescer's job (intake.validation), so this request answers at once."""
    if params.endpoint not in SERVED_ENDPOINTS:
        raise InvalidRequest(
            f"endpoint {params.endpoint!r} is not served here "
            f"(served: {', '.join(SERVED_ENDPOINTS)})", param="endpoint")
    window = parse_completion_window(params.completion_window)
    stored_file = get_file(session, tenant.id, params.input_file_id)
    if stored_file is None:
        raise NotFound(f"no file with id {params.input_file_id!r}", param="input_file_id")
    if stored_file.purpose != "batch":
        raise InvalidRequest(f"file {params.input_file_id!r} has purpose "
                             f"{stored_file.purpose!r}; a batch input needs purpose 'batch'",
                             param="input_file_id")
    columns: dict[str, Any] = {
        "status": SubmissionStatus.VALIDATING,
        "endpoint": params.endpoint,
        "completion_window": params.completion_window,
        "expires_at": func.now() + window,
        "batch_metadata": params.metadata,
        "callback_url": params.callback_url,
        "input_file_id": params.input_file_id,
        "output_expires_after_seconds": params.output_expires_after_seconds,
    }
    return submit(session, tenant=tenant, kind=OPENAI_KIND, jobs=[],
                  payload_hash=payload_hash, idempotency_key=idempotency_key,
                  source_name=stored_file.filename, columns=columns, policy=policy,
                  cache=None)  # no lines yet: the validator looks them up


def create_anthropic_batch(
    session: Session,
    limits: IntakeLimits,
    *,
    tenant: TenantRef,
    requests: list[Any],
    max_requests: int,
    payload_hash: str,
    caps: JobCaps,
    idempotency_key: str | None = None,
    policy: IntakePolicy | None = None,
    cache: CachePolicy | None = None,
) -> StoredSubmission:
    """Requests the exact result cache answers are done before this returns. `caps`: the
    tenant's max_tokens caps, applied to each request."""
    parsed = parse_requests(requests, limits, max_requests)
    jobs = []
    for item in parsed:
        if item.request is not None:
            job = new_job(item.index, item.request, item.model, limits)
            jobs.append(replace(caps.job(job),
                                complete_within=parse_completion_window(ANTHROPIC_WINDOW)))
        else:
            jobs.append(NewJob(line_no=item.index, model=item.model, request={},
                               estimated_tokens=0, custom_id=item.custom_id, error=item.error))
    columns = {
        "endpoint": "/v1/messages",
        "completion_window": ANTHROPIC_WINDOW,
        "expires_at": func.now() + parse_completion_window(ANTHROPIC_WINDOW),
        # Its requests came in the body and were validated above: it runs at once.
        "in_progress_at": func.now(),
    }
    return submit(session, tenant=tenant, kind=ANTHROPIC_KIND, jobs=jobs,
                  payload_hash=payload_hash, columns=columns,
                  idempotency_key=idempotency_key, policy=policy, cache=cache)


def retry_batch(
    session: Session,
    *,
    tenant: TenantRef,
    original: Submission,
    payload_hash: str,
    caps: JobCaps,
    idempotency_key: str | None = None,
    policy: IntakePolicy | None = None,
    cache: CachePolicy | None = None,
) -> StoredSubmission:
    """A new batch of the original's failed, expired and cancelled lines, with their
    custom_ids and line numbers (they still name lines of the same input file).

    A line keeps the request it was stored with, so a cap it met then still holds; a
    lower cap the tenant set since (`caps`) lowers it further, and its
    `requested_max_tokens` stays what the client first asked for."""
    if original.status != SubmissionStatus.COMPLETED:
        raise StateConflict(f"batch {original.id.hex} has not ended (or never ran); "
                            "only an ended batch can be retried", param="batch_id")
    window = parse_completion_window(original.completion_window or "24h")
    jobs = [
        caps.job(NewJob(line_no=job.line_no, model=job.model, request=job.request,
                        estimated_tokens=job.estimated_tokens, custom_id=job.custom_id,
                        tags=job.tags, priority=job.priority, complete_within=window,
                        cache_mode=job.cache_mode))
        for job in retryable_jobs(session, original.id) if job.request
    ]
    if not jobs:
        raise StateConflict("this batch has no failed, expired or cancelled line; there is "
                            "nothing to retry", param="batch_id")
    columns = {
        "endpoint": original.endpoint,
        "completion_window": original.completion_window,
        "expires_at": func.now() + window,
        "batch_metadata": original.batch_metadata,
        "callback_url": original.callback_url,
        "input_file_id": original.input_file_id,
        "output_expires_after_seconds": original.output_expires_after_seconds,
        "retry_of": original.id,
        "in_progress_at": func.now(),
    }
    return submit(session, tenant=tenant, kind=original.kind, jobs=jobs,
                  payload_hash=payload_hash, columns=columns,
                  idempotency_key=idempotency_key, policy=policy, cache=cache)


def batch_uuid(public_id: str, prefix: str) -> uuid.UUID:
    """The submission id inside a public batch id like `batch_<hex>`."""
    if public_id.startswith(prefix):
        try:
            return uuid.UUID(hex=public_id.removeprefix(prefix))
        except ValueError:
            pass
    raise NotFound(f"no batch with id {public_id!r}", param="batch_id")
