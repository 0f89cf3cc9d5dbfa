"""Validating OpenAI batches off the request: `POST /v1/batches` stores a batch as
`validating` with no jobs; this step, run by the coalescer, parses its input file and
either queues every line or fails the batch naming every bad line. The parsing itself is
the pure `parse_batch_file`; this is the I/O around it."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy.orm import Session, sessionmaker

from cache.keys import CachePolicy
from intake.admission import IntakePolicy, admit
from intake.batches import line_job
from intake.limits import IntakeLimits
from intake.max_tokens_caps import JobCaps
from intake.openai_lines import BatchLineError, parse_batch_file
from intake.text import escape_unstorable
from models.batches import (
    claim_validating_batch,
    fail_batch,
    note_validation_failure,
    open_without_jobs,
    start_batch,
)
from models.files import get_file
from models.max_tokens_caps import caps_of
from models.tables import Submission, Tenant
from models.tenants import TenantRef
from observability import metrics
from penny.errors import BudgetExceeded, QueueFull
from storage.port import ObjectStore

log = logging.getLogger(__name__)
# Enough of an exception's text to say what went wrong; SQLAlchemy appends the statement
# and its parameters (other lines' text) after the first line.
_REASON_CHARS = 300


class Outcome(StrEnum):
    QUEUED = "queued"  # every line is a queued job; the batch is in progress
    FAILED = "failed"  # a bad line (or a missing file, or too many errors): nothing queued
    CANCELLED = "cancelled"  # cancelled while it waited: nothing queued, ready to finalize
    RETRY = "retry"  # validating raised; the batch is tried again after a back-off


@dataclass(frozen=True)
class Validated:
    batch_id: uuid.UUID
    outcome: Outcome
    jobs: int
    from_cache: int = 0  # of `jobs`, answered from the exact result cache at once


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    retry_seconds: float


# The settings' defaults (PENNY_MAX_VALIDATION_ATTEMPTS, PENNY_VALIDATION_RETRY_SECONDS).
DEFAULT_RETRY = RetryPolicy(max_attempts=5, retry_seconds=5.0)


def _reason(error: BaseException) -> str:
    """What the batch's owner reads: the error's kind and first line. Not a file system
    error's path, which names the server's directories."""
    cause = getattr(error, "orig", None) or error  # the driver's error under SQLAlchemy's
    if isinstance(cause, OSError) and cause.strerror:
        text = cause.strerror
    else:
        text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return escape_unstorable(f"{type(cause).__name__}: {text}"[:_REASON_CHARS])


def _time_left(expires_at: datetime | None) -> timedelta | None:
    """The batch's window is each job's deadline (the coalescer sends jobs near it first),
    counted from the batch's creation, not from when it was validated."""
    if expires_at is None:
        return None
    return max(expires_at - datetime.now(UTC), timedelta(0))


def validate_next_batch(
    sessions: sessionmaker[Session], store: ObjectStore, limits: IntakeLimits,
    max_requests: int, retry: RetryPolicy | None = None, *, cache: CachePolicy | None = None,
    admission: IntakePolicy | None = None,
) -> Validated | None:
    """Validate the next batch waiting for it; None when none waits (or every waiting
    one is being validated elsewhere, or backs off).

    One transaction holds the batch's row lock from claim to commit, so the jobs and the
    batch's move to `open` (or `failed`) land together, and a concurrent validator skips
    the batch. An error on the way (the store did not answer, Postgres refused a row)
    rolls that back and counts an attempt: the batch waits out a back-off while other
    batches are validated, and fails naming the error after `retry.max_attempts`. Lines
    the exact result cache answers (`cache`) are done in the same transaction as the rest.
    Each line takes the tenant's max_tokens caps as they stand when its file is validated.

    The tenant's queued-jobs limit and hard budget (`admission`) are checked again with the
    lines queued: at create the batch's size was unknown, and other submissions may have
    used the room since. A batch they refuse fails, naming the limit; nothing is queued.
    """
    policy = retry or DEFAULT_RETRY
    with sessions() as session:
        batch = claim_validating_batch(session)
        if batch is None:
            session.rollback()
            return None
        batch_id = batch.id  # commit expires the row; the id is all that is needed after
        try:
            return _validate(session, batch, store, limits, max_requests, cache,
                             admission or IntakePolicy())
        except Exception as error:
            session.rollback()
            reason = _reason(error)
            attempts = note_validation_failure(
                session, batch_id, max_attempts=policy.max_attempts,
                retry_seconds=policy.retry_seconds,
                error=BatchLineError(
                    None, "validation_failed",
                    f"validating the input file failed {policy.max_attempts} times; the "
                    f"last error was {reason}").as_dict())
            session.commit()
            if attempts is None:
                log.error("batch submission %s failed: validating it raised %d times, "
                          "last %s", batch_id, policy.max_attempts, reason)
                return Validated(batch_id, Outcome.FAILED, 0)
            log.warning("validating batch submission %s raised (attempt %d of %d), tried "
                        "again later: %s", batch_id, attempts, policy.max_attempts, reason,
                        exc_info=True)
            return Validated(batch_id, Outcome.RETRY, 0)


def _validate(
    session: Session, batch: Submission, store: ObjectStore, limits: IntakeLimits,
    max_requests: int, cache: CachePolicy | None, admission: IntakePolicy,
) -> Validated:
    batch_id = batch.id
    if batch.cancelling_at is not None:
        open_without_jobs(session, batch_id)
        session.commit()
        return Validated(batch_id, Outcome.CANCELLED, 0)
    stored_file = get_file(session, batch.tenant_id, batch.input_file_id or "")
    if stored_file is None:  # deleted or expired since the batch was created
        fail_batch(session, batch_id, [BatchLineError(
            None, "file_not_found",
            f"the input file {batch.input_file_id!r} no longer exists",
            "input_file_id").as_dict()])
        session.commit()
        return Validated(batch_id, Outcome.FAILED, 0)
    parsed = parse_batch_file(store.get(stored_file.object_key), batch.endpoint or "",
                              limits, max_requests)
    if parsed.errors:
        fail_batch(session, batch_id, [e.as_dict() for e in parsed.errors])
        session.commit()
        return Validated(batch_id, Outcome.FAILED, 0)
    # The batch's metadata (`batches.create(metadata=...)`) tags each of its jobs, so
    # reports by feature and the max_tokens audit see batch files like any other work;
    # a callback URL given there is where to call, not what the work is.
    batch_tags = {key: value for key, value in (batch.batch_metadata or {}).items()
                  if key != "callback_url"}
    # The tenant's max_tokens caps, read once for the whole file.
    caps = JobCaps(caps_of(session, batch.tenant_id), limits.feature_tag)
    jobs = [replace(caps.job(line_job(line, limits, batch_tags)),
                    complete_within=_time_left(batch.expires_at))
            for line in parsed.lines]
    tenant = TenantRef(batch.tenant_id, session.get_one(Tenant, batch.tenant_id).name)
    try:
        # A savepoint: a refusal undoes the jobs and keeps the batch's row lock.
        with session.begin_nested():
            inserted = start_batch(session, batch, jobs, cache)
            queued = [job for job, job_id in zip(jobs, inserted.ids, strict=True)
                      if job_id not in inserted.from_cache]
            warnings = admit(session, admission, tenant, queued) if queued else []
    except (QueueFull, BudgetExceeded) as refused:
        fail_batch(session, batch_id, [BatchLineError(
            None, refused.code, escape_unstorable(refused.message), refused.param).as_dict()])
        session.commit()
        return Validated(batch_id, Outcome.FAILED, 0)
    if warnings:
        batch.warnings = [*(batch.warnings or []), *warnings]
    session.commit()
    metrics.record_exact_cache_hits(
        job.model for job, job_id in zip(jobs, inserted.ids, strict=True)
        if job_id in inserted.from_cache)
    return Validated(batch_id, Outcome.QUEUED, len(jobs), len(inserted.from_cache))
