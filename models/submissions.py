"""Queries for intake: tenants, submissions and their jobs, and reading them back."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from cache.keys import CacheMode, CachePolicy
from coalescer.single_flight import single_flight_key, single_flight_keys
from models.fast_rows import copy_rows, json_text, time_ordered_ids
from models.result_cache import ANSWER_COLUMNS, CachedAnswer, answer_of_row, record_cache_hits
from models.status import TERMINAL_JOB_STATUSES, JobStatus, SubmissionStatus
from models.tables import Job, LedgerEntry, Result, ResultCacheEntry, StoredFile, Submission
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


@dataclass(frozen=True)
class SingleJobSubmission:
    """One single-job submission of a group written in one transaction."""

    tenant_id: uuid.UUID
    job: NewJob
    request_hash: str
    cache_key: str | None
    # The intake request's trace context (taken where the request is handled: the group
    # is written on another thread).
    traceparent: str | None = None


@dataclass(frozen=True)
class StoredSingleJob:
    """A single-job submission written by `insert_single_job_submissions`: all its
    request is answered with."""

    submission_id: uuid.UUID
    job_id: uuid.UUID
    from_cache: bool


def insert_single_job_submissions(
    session: Session, entries: Sequence[SingleJobSubmission],
    answers: Mapping[tuple[uuid.UUID, str], CachedAnswer],
) -> list[StoredSingleJob]:
    """Insert many single-job submissions (no idempotency key) and their jobs in one
    statement of fixed text (psycopg prepares it after a few uses): the arrays travel as
    one parameter each, whatever the group's size. Nothing comes back from the database,
    so nothing is read back, and no ORM object is made for rows only their ids answer
    for. `answers` holds the exact cache's live entries by (tenant, key). The caller
    commits."""
    now = datetime.now(UTC)
    stored = [StoredSingleJob(submission_id=uuid.uuid4(), job_id=uuid.uuid4(),
                              from_cache=entry.cache_key is not None
                              and (entry.tenant_id, entry.cache_key) in answers)
              for entry in entries]
    hits = {s.job_id: answers[(e.tenant_id, e.cache_key)]
            for s, e in zip(stored, entries, strict=True)
            if s.from_cache and e.cache_key is not None}
    with _driver_cursor(session) as cursor:
        cursor.execute(_INSERT_SINGLE_JOB_SUBMISSIONS,
                       _single_job_parameters(stored, entries, hits, now))
    for one, entry in zip(stored, entries, strict=True):
        if one.from_cache:
            record_cache_hits(session, entry.tenant_id, one.submission_id,
                              {one.job_id: hits[one.job_id]})
    return stored


def insert_single_job_misses(
    session: Session, entries: Sequence[SingleJobSubmission],
) -> tuple[list[StoredSingleJob | None], dict[int, CachedAnswer]]:
    """Insert, as queued, the single-job submissions the exact cache has no live entry
    for, and read the answers of the others, in one statement: with the cache on, a group
    of misses (the common case) costs the same round trip as with it off. Returns what
    was stored (None where a live entry was found) and the answers found by position:
    only they need a second step (`insert_single_job_submissions` with those answers).
    Tenant-scoped: a key is looked for only among its own tenant's entries. The caller
    commits."""
    now = datetime.now(UTC)
    fresh = [StoredSingleJob(submission_id=uuid.uuid4(), job_id=uuid.uuid4(),
                             from_cache=False) for _ in entries]
    with _driver_cursor(session) as cursor:
        cursor.execute(_INSERT_SINGLE_JOB_MISSES,
                       [[e.cache_key for e in entries],
                        *_single_job_parameters(fresh, entries, {}, now)])
        # Ordinals count from 1.
        found = {row[0] - 1: answer_of_row(row[1:]) for row in cursor.fetchall()}
    stored: list[StoredSingleJob | None] = list(fresh)
    for position in found:
        stored[position] = None
    return stored, found


def _driver_cursor(session: Session) -> Any:
    """A cursor on the session's own connection (same transaction), past the ORM's
    execution and row machinery, which cost several times these statements."""
    driver = session.connection().connection.driver_connection
    assert driver is not None
    return driver.cursor()


def _single_job_parameters(stored: Sequence[StoredSingleJob],
                           entries: Sequence[SingleJobSubmission],
                           hits: Mapping[uuid.UUID, CachedAnswer], now: datetime
                           ) -> list[Any]:
    """The parameters `_single_job_statement` takes, after any of its own: request
    hashes, traceparents, one array per job column, then the time."""
    columns: list[list[Any]] = [[] for _ in _JOB_COLUMNS[1]]
    for row in _job_rows([(s.job_id, s.submission_id, e.tenant_id, e.job)
                          for s, e in zip(stored, entries, strict=True)], hits, now):
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return [[e.request_hash for e in entries], [e.traceparent for e in entries], *columns,
            now]


# A job row's ids (job, submission, tenant), each a UUID or its text, then the job.
_JobRow = tuple[uuid.UUID, uuid.UUID | str, uuid.UUID | str, NewJob]


def _copy_jobs(session: Session, rows: Sequence[_JobRow],
               hits: Mapping[uuid.UUID, CachedAnswer],
               flight_keys: Sequence[str | None] | None = None) -> None:
    """COPY (job id, submission id, tenant id, job) rows, each document serialised once:
    a row per statement through the ORM's executemany cost ~0.3 ms of CPU per job, more
    than everything else intake does."""
    # SQL now() cannot ride along in a COPY
    copy_rows(session, _JOB_COLUMNS, _job_rows(rows, hits, datetime.now(UTC), flight_keys))


def _job_rows(rows: Iterable[_JobRow], hits: Mapping[uuid.UUID, CachedAnswer],
              now: datetime, flight_keys: Sequence[str | None] | None = None
              ) -> Iterator[tuple[Any, ...]]:
    """Each job's values in `_JOB_COLUMNS` order, its documents serialised once; its
    single-flight key from `flight_keys` (one per row) when given."""
    for n, (job_id, submission_id, tenant_id, job) in enumerate(rows):
        # Hashing a UUID is a Python call: most chunks have no hits to look in.
        hit = bool(hits) and job_id in hits
        yield (job_id, submission_id, tenant_id, job.line_no, job.custom_id, job.model,
               json_text(job.request), json_text(job.tags or {}), job.priority,
               job.estimated_tokens, _initial_status(job, hit),
               None if job.error is None else json_text(job.error),
               now if job.error or hit else None,
               now + job.complete_within if job.complete_within else None,
               flight_keys[n] if flight_keys is not None
               else None if job.error or not job.single_flight
               else single_flight_key(str(tenant_id), job.model, job.request),
               job.cache_mode, None if job.input_row is None else json_text(job.input_row),
               None if job.route is None else json_text(job.route),
               job.client_retry_count)


_JOB_COLUMNS = (Job.__tablename__, (
    "id", "submission_id", "tenant_id", "line_no", "custom_id", "model", "request", "tags",
    "priority", "estimated_tokens", "status", "error", "finished_at", "deadline_at",
    "single_flight_key", "cache_mode", "input_row", "route", "client_retry_count"))
_JOB_ARRAY_TYPES = ("uuid", "uuid", "uuid", "int", "text", "text", "jsonb", "jsonb", "int",
                    "int", "text", "jsonb", "timestamptz", "timestamptz", "text", "text",
                    "jsonb", "jsonb", "int")
_COLUMN_LIST = ", ".join(_JOB_COLUMNS[1])


def _single_job_statement(lookup: bool) -> str:
    """One submission and its job per row of the arrays. The submissions take their ids
    and tenants from the jobs' own arrays (one job each, in order). With `lookup`, a
    first array holds each row's cache key (or NULL): rows whose key has a live entry in
    their tenant's exact cache are not inserted; their ordinals and entries come back."""
    types = ["text", "text", *_JOB_ARRAY_TYPES]
    names = f"request_hash, traceparent, {_COLUMN_LIST}"
    if lookup:
        types, names = ["text", *types], f"cache_key, {names}"
    statement = ("WITH job AS (SELECT * FROM unnest("
                 + ", ".join(f"%s::{t}[]" for t in types)
                 + f") WITH ORDINALITY AS j({names}, n)), ")
    source = "job"
    if lookup:
        statement += (
            "looked AS (SELECT job.*, job.cache_key IS NOT NULL AND EXISTS (SELECT 1 FROM "
            f"{ResultCacheEntry.__tablename__} e WHERE e.tenant_id = job.tenant_id AND "
            # An expired entry is never served, even before the sweeper removes it.
            "e.cache_key = job.cache_key AND e.expires_at > now()) AS cached FROM job), ")
        source = "looked WHERE NOT cached"
    statement += (
        "submitted AS (INSERT INTO submissions (id, tenant_id, kind, status, request_hash, "
        "total_jobs, created_at, traceparent) SELECT submission_id, tenant_id, 'job', "
        f"'open', request_hash, 1, %s::timestamptz, traceparent FROM {source})")
    insert_jobs = f"INSERT INTO jobs ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM {source}"
    if not lookup:
        return f"{statement} {insert_jobs}"
    # What the lookup found is read in the same statement (the same snapshot).
    return (f"{statement}, inserted AS ({insert_jobs}) SELECT looked.n, "
            + ", ".join(f"e.{column}" for column in ANSWER_COLUMNS)
            + f" FROM looked JOIN {ResultCacheEntry.__tablename__} e ON e.tenant_id = "
            "looked.tenant_id AND e.cache_key = looked.cache_key WHERE looked.cached")


_INSERT_SINGLE_JOB_SUBMISSIONS = _single_job_statement(lookup=False)
_INSERT_SINGLE_JOB_MISSES = _single_job_statement(lookup=True)


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
