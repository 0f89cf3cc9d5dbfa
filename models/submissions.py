"""Queries for intake: tenants, submissions and their jobs, and reading them back."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from cache.keys import CacheMode, CachePolicy
from coalescer.single_flight import single_flight_key, single_flight_keys
from models.fast_rows import copy_rows, json_text, time_ordered_ids
from models.result_cache import CachedAnswer, record_cache_hits
from models.status import TERMINAL_JOB_STATUSES, JobStatus, SubmissionStatus
from models.tables import Job, LedgerEntry, Result, StoredFile, Submission
from observability.tracing import current_traceparent


@dataclass(frozen=True)
class NewJob:
    """A job ready to be queued, or (with `error`) a line that failed validation."""

    line_no: int
    model: str
    request: dict[str, Any]
    estimated_tokens: int
    custom_id: str | None = None
    tags: dict[str, Any] | None = None
    priority: int = 0
    error: dict[str, Any] | None = None
    # Measured from when the job is queued; None: no deadline.
    complete_within: timedelta | None = None
    cache_mode: str = CacheMode.ON
    input_row: list[str] | None = None  # the CSV row it came from
    # How `auto` or `cascade` chose `model` (see intake.routing); None: named by the client.
    route: dict[str, Any] | None = None
    # False: never answered from another job's run (a cascade job judges its own answer).
    single_flight: bool = True
    # The client SDK's retry count for the request (`x-stainless-retry-count`), if sent.
    client_retry_count: int | None = None


@dataclass(frozen=True)
class StoredSubmission:
    submission: Submission
    job_ids: list[uuid.UUID]
    replayed: bool
    # Jobs answered from the exact result cache in this very request (already succeeded).
    from_cache: frozenset[uuid.UUID] = frozenset()


@dataclass(frozen=True)
class InsertedJobs:
    ids: list[uuid.UUID]
    from_cache: frozenset[uuid.UUID]


@dataclass(frozen=True)
class CacheLookup:
    """What the exact result cache holds for a list of jobs: each job's key (None: the job
    is not read from the cache) and the live entries found under those keys."""

    keys: list[str | None]
    answers: Mapping[str, CachedAnswer]
    # Each job's single-flight key, when `job_keys` made them with `keys`; None: the
    # insert computes them.
    single_flight: Sequence[str | None] | None = None


def lookup_keys(jobs: Sequence[NewJob], cache: CachePolicy | None) -> list[str | None]:
    """Each job's exact cache key if it may be answered from the cache, else None."""
    if cache is None or not cache.enabled:
        return [None] * len(jobs)
    return [cache.key(job.model, job.request)
            if job.error is None and cache.reads(job.cache_mode) else None
            for job in jobs]


def job_keys(jobs: Sequence[NewJob], tenant_id: uuid.UUID, cache: CachePolicy | None
             ) -> tuple[list[str | None], list[str | None]]:
    """Each job's exact cache key (as `lookup_keys`) and the single-flight key its row is
    stored with (as `insert_jobs` makes it), each request encoded once for both."""
    tenant = str(tenant_id)
    cache_keys: list[str | None] = []
    flight_keys: list[str | None] = []
    for job in jobs:
        if job.error is not None:
            cache_keys.append(None)
            flight_keys.append(None)
            continue
        # The single-flight key for "" is the exact cache's request key.
        keys = single_flight_keys((tenant, ""), job.model, job.request)
        flight_keys.append(keys[0] if keys is not None and job.single_flight else None)
        cache_keys.append(cache.key_from(job.model, keys[1] if keys is not None else None)
                          if cache is not None and cache.reads(job.cache_mode) else None)
    return cache_keys, flight_keys


def find_by_idempotency_key(
    session: Session, tenant_id: uuid.UUID, key: str
) -> Submission | None:
    return session.execute(
        select(Submission).where(
            Submission.tenant_id == tenant_id, Submission.idempotency_key == key
        )
    ).scalar_one_or_none()


def note_replay(session: Session, submission_id: uuid.UUID) -> None:
    """Count one more answer of a submission to its repeated Idempotency-Key (retry-storm
    detection reads it). The caller commits."""
    session.execute(update(Submission).where(Submission.id == submission_id)
                    .values(idempotent_replays=Submission.idempotent_replays + 1,
                            last_replayed_at=func.now()))


def forget_idempotency_key(session: Session, submission_id: uuid.UUID) -> None:
    """Free a key whose window has passed for reuse. The caller commits."""
    session.execute(update(Submission).where(Submission.id == submission_id)
                    .values(idempotency_key=None))


def forget_expired_idempotency_keys(session: Session, before: datetime, limit: int = 1000
                                    ) -> int:
    """The sweeper's share: free keys used before `before` (submissions and uploads).
    The caller commits."""
    freed = 0
    for table in (Submission, StoredFile):
        old = (select(table.id).where(table.idempotency_key.is_not(None),
                                      table.created_at < before).limit(limit))
        result = session.execute(
            update(table).where(table.id.in_(old.scalar_subquery()))
            .values(idempotency_key=None)
        )
        freed += cast(CursorResult[Any], result).rowcount
    return freed


def job_ids_of(session: Session, submission_id: uuid.UUID) -> list[uuid.UUID]:
    rows = session.execute(
        select(Job.id).where(Job.submission_id == submission_id, Job.cascade_of.is_(None))
        .order_by(Job.line_no)
    )
    return list(rows.scalars())


def insert_submission(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    kind: str,
    request_hash: str,
    jobs: Sequence[NewJob],
    idempotency_key: str | None,
    source_name: str | None = None,
    columns: Mapping[str, Any] | None = None,
    cached: CacheLookup | None = None,
) -> StoredSubmission | None:
    """Insert a submission and its jobs; None when the idempotency key is already taken.

    `columns` sets further submission columns (a batch API's endpoint, window, ...);
    `cached` answers what it can from the exact result cache (see `insert_jobs`).
    The caller commits. The insert races safely with a concurrent twin: the unique
    (tenant, idempotency key) constraint lets exactly one of them in.
    """
    submission_id = uuid.uuid4()
    # RETURNING the whole row: what the caller answers with (created_at and the other
    # server defaults included) comes back with the insert, not from a second query.
    submission = session.execute(
        insert(Submission)
        .values(
            id=submission_id,
            tenant_id=tenant_id,
            kind=kind,
            request_hash=request_hash,
            total_jobs=len(jobs),
            idempotency_key=idempotency_key,
            source_name=source_name,
            traceparent=current_traceparent(),
            **(columns or {}),
        )
        .on_conflict_do_nothing()
        .returning(Submission)
    ).scalar_one_or_none()
    if submission is None:
        return None
    queued = insert_jobs(session, submission_id, tenant_id, jobs, cached)
    return StoredSubmission(submission=submission, job_ids=queued.ids, replayed=False,
                            from_cache=queued.from_cache)


def insert_jobs(
    session: Session, submission_id: uuid.UUID, tenant_id: uuid.UUID, jobs: Sequence[NewJob],
    cached: CacheLookup | None = None,
) -> InsertedJobs:
    """Queue `jobs` under a submission (a job with `error` is stored failed). A job whose
    answer `cached` holds is stored `succeeded` with its result and a zero-cost ledger row
    instead, never reaching the queue. The caller commits."""
    job_ids = time_ordered_ids(len(jobs))
    if not jobs:  # a batch that failed validation, or is still validating, has no jobs
        return InsertedJobs(job_ids, frozenset())
    hits: dict[uuid.UUID, CachedAnswer] = {}
    if cached is not None:
        assert cached.single_flight is None or len(cached.single_flight) == len(jobs)
        hits = {job_id: cached.answers[key]
                for job_id, key in zip(job_ids, cached.keys, strict=True)
                if key is not None and key in cached.answers}
    # The ids every row shares go as text, converted once: psycopg's UUID dumper is
    # Python, called for each value.
    submission, tenant = str(submission_id), str(tenant_id)
    _copy_jobs(session, [(job_id, submission, tenant, job)
                         for job_id, job in zip(job_ids, jobs, strict=True)], hits,
               None if cached is None else cached.single_flight)
    record_cache_hits(session, tenant_id, submission_id, hits)
    return InsertedJobs(job_ids, frozenset(hits))


# A job row's ids (job, submission, tenant), each a UUID or its text, then the job.
_JobRow = tuple[uuid.UUID, uuid.UUID | str, uuid.UUID | str, NewJob]


def _copy_jobs(session: Session, rows: Sequence[_JobRow],
               hits: Mapping[uuid.UUID, CachedAnswer],
               flight_keys: Sequence[str | None] | None = None) -> None:
    """COPY (job id, submission id, tenant id, job) rows, each document serialised once:
    a row per statement through the ORM's executemany cost ~0.3 ms of CPU per job, more
    than everything else intake does."""
    # SQL now() cannot ride along in a COPY
    copy_rows(session, JOB_COLUMNS, job_rows(rows, hits, datetime.now(UTC), flight_keys))


def job_rows(rows: Iterable[_JobRow], hits: Mapping[uuid.UUID, CachedAnswer],
             now: datetime, flight_keys: Sequence[str | None] | None = None,
             document: Callable[[Any], Any] = json_text) -> Iterator[tuple[Any, ...]]:
    """Each job's values in `JOB_COLUMNS` order, each of its documents (the jsonb
    columns) as `document` makes it: serialised once by default; its single-flight key
    from `flight_keys` (one per row) when given."""
    for n, (job_id, submission_id, tenant_id, job) in enumerate(rows):
        # Hashing a UUID is a Python call: most chunks have no hits to look in.
        hit = bool(hits) and job_id in hits
        yield (job_id, submission_id, tenant_id, job.line_no, job.custom_id, job.model,
               document(job.request), document(job.tags or {}), job.priority,
               job.estimated_tokens, _initial_status(job, hit),
               None if job.error is None else document(job.error),
               now if job.error or hit else None,
               now + job.complete_within if job.complete_within else None,
               flight_keys[n] if flight_keys is not None
               else None if job.error or not job.single_flight
               else single_flight_key(str(tenant_id), job.model, job.request),
               job.cache_mode, None if job.input_row is None else document(job.input_row),
               None if job.route is None else document(job.route),
               job.client_retry_count)


JOB_COLUMNS = (Job.__tablename__, (
    "id", "submission_id", "tenant_id", "line_no", "custom_id", "model", "request", "tags",
    "priority", "estimated_tokens", "status", "error", "finished_at", "deadline_at",
    "single_flight_key", "cache_mode", "input_row", "route", "client_retry_count"))
# Each column's SQL type, for statements that take the rows as parameters.
JOB_ARRAY_TYPES = ("uuid", "uuid", "uuid", "int", "text", "text", "jsonb", "jsonb", "int",
                   "int", "text", "jsonb", "timestamptz", "timestamptz", "text", "text",
                   "jsonb", "jsonb", "int")
JOB_COLUMN_LIST = ", ".join(JOB_COLUMNS[1])


def _initial_status(job: NewJob, from_cache: bool) -> JobStatus:
    if job.error:
        return JobStatus.FAILED
    return JobStatus.SUCCEEDED if from_cache else JobStatus.QUEUED


@dataclass(frozen=True)
class JobView:
    job: Job
    result: Result | None
    ledger: LedgerEntry | None


def get_job(session: Session, tenant_id: uuid.UUID, job_id: uuid.UUID) -> JobView | None:
    row = session.execute(
        select(Job, Result, LedgerEntry)
        .outerjoin(Result, Result.job_id == Job.id)
        .outerjoin(LedgerEntry, LedgerEntry.job_id == Job.id)
        .where(Job.id == job_id, Job.tenant_id == tenant_id)
    ).one_or_none()
    if row is None:
        return None
    return JobView(job=row[0], result=row[1], ledger=row[2])


def get_submission(
    session: Session, tenant_id: uuid.UUID, submission_id: uuid.UUID
) -> Submission | None:
    return session.execute(
        select(Submission).where(
            Submission.id == submission_id, Submission.tenant_id == tenant_id
        )
    ).scalar_one_or_none()


def find_unfinished(
    session: Session, tenant_id: uuid.UUID, kind: str, request_hash: str
) -> Submission | None:
    """The newest submission of this kind and content that has not completed: what a run
    killed midway left behind, for the next run of the same input to finish."""
    return session.execute(
        select(Submission).where(
            Submission.tenant_id == tenant_id, Submission.kind == kind,
            Submission.request_hash == request_hash,
            Submission.status != SubmissionStatus.COMPLETED,
        ).order_by(Submission.created_at.desc()).limit(1)
    ).scalar_one_or_none()


def status_counts(session: Session, submission_id: uuid.UUID) -> dict[str, int]:
    rows = session.execute(
        select(Job.status, func.count())
        .where(Job.submission_id == submission_id, Job.cascade_of.is_(None))
        .group_by(Job.status)
    )
    return {status: count for status, count in rows}


def count_unfinished(counts: dict[str, int]) -> int:
    return sum(n for status, n in counts.items() if JobStatus(status) not in TERMINAL_JOB_STATUSES)


def unfinished_models(session: Session, submission_id: uuid.UUID) -> list[str]:
    """The models a submission still has jobs to run for: queued, or batched or running
    (a killed run's batches, which the sweeper hands back once their lease runs out)."""
    return sorted(session.execute(
        select(Job.model).where(Job.submission_id == submission_id,
                                Job.status.not_in(TERMINAL_JOB_STATUSES)).distinct()
    ).scalars())
