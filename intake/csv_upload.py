"""Queues a CSV file as one submission, streaming it into job rows.

The file is read once, row by row, and its jobs are written in chunks inside one
transaction, so memory stays flat however many rows it holds and the submission appears
whole or not at all. A file with bad rows is rejected whole (nothing is committed, every
bad row named) unless the caller asks to skip them; then each bad row is stored as a failed
job naming its line, and the good rows run.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import IO, Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from cache.keys import CachePolicy
from intake.admission import IntakePolicy, admit_counted
from intake.csv_mapping import (
    BAD_FILE,
    CsvMapping,
    CsvOptions,
    csv_mapping,
    plain_row_job,
    refuse_bad_rows,
    row_outcome,
)
from intake.csv_reader import CsvItem, CsvReader, CsvRow, CsvRowError
from intake.heap_freeze import older_objects_frozen
from intake.limits import IntakeLimits
from intake.line_outcome import LineError, LineOutcome
from intake.max_tokens_caps import JobCaps
from intake.read_ahead import read_ahead
from intake.service import jobs_for_file, request_hash
from intake.text import escape_unstorable
from models.result_cache import find_cached_answers
from models.submissions import (
    CacheLookup,
    NewJob,
    find_by_idempotency_key,
    forget_idempotency_key,
    insert_jobs,
    insert_submission,
    job_keys,
)
from models.tables import Submission
from models.tenants import TenantRef
from observability import metrics
from penny.errors import IdempotencyConflict, InputFileError
from tenancy.budgets import TokenBound

CHUNK_ROWS = 2000  # rows per COPY, with one exact-cache lookup for them
# Chunks parsed ahead of the one being written: the parser and Postgres work at once, and
# memory stays a few chunks however large the file.
READ_AHEAD_CHUNKS = 2
_HASH_CHUNK = 1 << 20
MAX_REPORTED_ERRORS = 1000


def content_digest(stream: IO[bytes], fingerprint: str | None) -> str:
    """What identifies an uploaded file's bytes: its `fingerprint` (an S3 object's URL and
    ETag) when it has one, else the SHA-256 of the seekable stream, read from the start and
    left at the start."""
    if fingerprint is not None:
        return fingerprint
    sha = hashlib.sha256()
    stream.seek(0)
    while chunk := stream.read(_HASH_CHUNK):
        sha.update(chunk)
    stream.seek(0)
    return sha.hexdigest()


@dataclass(frozen=True)
class CsvSource:
    """A CSV file to queue: its bytes (seekable), its name and how to read it."""

    stream: IO[bytes]
    name: str
    options: CsvOptions
    max_cell_chars: int
    # What identifies the bytes without reading them (an S3 object's URL and ETag); None:
    # the stream is seekable and its bytes are hashed.
    fingerprint: str | None = None

    def digest(self, extra: Any = None) -> str:
        """What the Idempotency-Key is checked against: the bytes and the options."""
        options = self.options
        return request_hash([self.name, content_digest(self.stream, self.fingerprint),
                             options.template, options.id_column, options.encoding,
                             options.skip_bad_rows, extra])


@dataclass(frozen=True)
class QueuedCsv:
    submission: Submission
    rows: int
    bad_rows: int  # stored as failed jobs (skip mode) or 0
    from_cache: int
    replayed: bool


@dataclass
class _Tally:
    rows: int = 0
    queued: int = 0
    from_cache: int = 0
    errors: list[LineError] = field(default_factory=list)
    error_count: int = 0
    fatal: bool = False
    # Per model: prompt and output token bounds of the queued jobs (the budget's input).
    tokens: dict[str, list[int]] = field(default_factory=dict)
    hit_models: Counter[str] = field(default_factory=Counter)

    def bounds(self) -> list[TokenBound]:
        return [TokenBound(model, p, o) for model, (p, o) in self.tokens.items()]


def _replay(session: Session, tenant: TenantRef, key: str, digest: str,
            policy: IntakePolicy) -> Submission | None:
    """The submission an earlier upload with this key made, if it still counts."""
    existing = find_by_idempotency_key(session, tenant.id, key)
    if existing is None:
        return None
    if existing.created_at < policy.idempotency_cutoff():
        forget_idempotency_key(session, existing.id)
        session.commit()
        return None
    if existing.request_hash != digest:
        raise IdempotencyConflict(
            "this Idempotency-Key was already used with a different upload",
            param="Idempotency-Key")
    return existing


def _general_outcome(item: CsvItem, mapping: CsvMapping
                     ) -> tuple[LineOutcome, tuple[str, ...]]:
    if isinstance(item, CsvRowError):
        code = BAD_FILE if item.fatal else "invalid_line"
        return LineError(item.line_no, code, item.message, item.raw), ()
    return row_outcome(mapping, item), item.cells


def _row_job(item: CsvItem, mapping: CsvMapping, limits: IntakeLimits, caps: JobCaps
             ) -> NewJob:
    """The job (or failed job naming its line) one row makes, the tenant's caps applied: a
    plain valid row without the general validator, every other one through it."""
    if isinstance(item, CsvRow):
        job = plain_row_job(mapping, item, limits, caps)
        if job is not None:
            return job
    outcome, cells = _general_outcome(item, mapping)
    (job,) = jobs_for_file([outcome], limits)
    return caps.job(replace(job, input_row=_stored_row(cells) if cells else None))


def _stored_row(cells: tuple[str, ...]) -> list[str]:
    return [escape_unstorable(cell) for cell in cells]


@dataclass(frozen=True)
class _Chunk:
    jobs: list[NewJob]
    keys: list[str | None]  # each job's exact cache key, if it may be answered from it
    flight_keys: list[str | None]  # each job's single-flight key


def _chunk(jobs: list[NewJob], tenant: TenantRef, cache: CachePolicy | None) -> _Chunk:
    return _Chunk(jobs, *job_keys(jobs, tenant.id, cache))


def _write_chunk(session: Session, submission_id: uuid.UUID, tenant: TenantRef,
                 chunk: _Chunk, tally: _Tally) -> None:
    wanted = {k for k in chunk.keys if k is not None}
    answers = find_cached_answers(session, tenant.id, wanted) if wanted else {}
    inserted = insert_jobs(session, submission_id, tenant.id, chunk.jobs,
                           CacheLookup(chunk.keys, answers, chunk.flight_keys))
    hits = inserted.from_cache
    for job, job_id in zip(chunk.jobs, inserted.ids, strict=True):
        if job.error is not None:
            continue
        if hits and job_id in hits:  # hashing a UUID is a Python call: skip it for none
            tally.from_cache += 1
            tally.hit_models[job.model] += 1
            continue
        tally.queued += 1
        output = int(job.request.get("sampling", {}).get("max_tokens", 0))
        bound = tally.tokens.setdefault(job.model, [0, 0])
        bound[0] += job.estimated_tokens - output
        bound[1] += output


def _chunks(rows: Iterator[NewJob], tenant: TenantRef, cache: CachePolicy | None,
            tally: _Tally, *, reject: bool) -> Iterator[_Chunk]:
    """The jobs to write, a chunk at a time, counting rows and bad rows as it reads; once
    a row is bad in a file that will be rejected, it only reads on to name every bad row."""
    jobs: list[NewJob] = []
    for job in rows:
        tally.rows += 1
        if job.error is not None:
            tally.error_count += 1
            if len(tally.errors) < MAX_REPORTED_ERRORS:
                tally.errors.append(LineError(job.line_no, str(job.error["code"]),
                                              str(job.error["message"]), ""))
            if job.error["code"] == BAD_FILE:
                tally.fatal = True  # the reader stops here
                continue
        if tally.error_count and reject:
            continue
        jobs.append(job)
        if len(jobs) >= CHUNK_ROWS:
            yield _chunk(jobs, tenant, cache)
            jobs = []
    if jobs and not (tally.error_count and reject):
        yield _chunk(jobs, tenant, cache)


def _stream_rows(session: Session, submission_id: uuid.UUID, tenant: TenantRef,
                 rows: Iterator[NewJob], cache: CachePolicy | None, *, reject: bool
                 ) -> _Tally:
    """Write every row's job, a chunk at a time, the file read ahead on another thread
    while the database takes the chunk before (see intake.read_ahead)."""
    tally = _Tally()
    # The chunks in flight outlive the collector's young generations; full collections
    # then walk the whole process for them unless what existed before is set aside.
    with older_objects_frozen():
        for chunk in read_ahead(_chunks(rows, tenant, cache, tally, reject=reject),
                                READ_AHEAD_CHUNKS):
            if tally.error_count and reject:
                continue  # the file will be refused: what is written is rolled back anyway
            _write_chunk(session, submission_id, tenant, chunk, tally)
    return tally


@dataclass(frozen=True)
class StreamedFile:
    """An input file opened for queueing: its jobs, read as they are consumed, and what
    the submission records about it."""

    name: str
    jobs: Iterator[NewJob]
    skip_bad_rows: bool
    columns: dict[str, Any] = field(default_factory=dict)  # e.g. a CSV's input columns


def queue_streamed(
    session: Session,
    digest: str,
    open_file: Callable[[], StreamedFile],
    *,
    tenant: TenantRef,
    policy: IntakePolicy,
    cache: CachePolicy | None,
    idempotency_key: str | None = None,
    columns: dict[str, Any] | None = None,
    kind: str,
) -> QueuedCsv:
    """Queue every job of the file `open_file` opens as one submission and commit; replay
    the original on a repeated Idempotency-Key (`digest` identifies the upload; the file is
    not opened then). InputFileError (nothing written) for a file that cannot be used:
    what `open_file` refuses, bad rows unless skipped, no rows."""
    if idempotency_key is not None:
        existing = _replay(session, tenant, idempotency_key, digest, policy)
        if existing is not None:
            return QueuedCsv(existing, existing.total_jobs, 0, 0, replayed=True)
    opened = open_file()  # what it checks up front (a CSV's header) fails before any write
    stored = insert_submission(
        session, tenant_id=tenant.id, kind=kind, request_hash=digest, jobs=[],
        idempotency_key=idempotency_key, source_name=opened.name,
        columns={**opened.columns, **(columns or {})})
    if stored is None:  # a twin with the same key got in first: answer as it did
        session.rollback()
        assert idempotency_key is not None
        existing = _replay(session, tenant, idempotency_key, digest, policy)
        if existing is None:
            raise IdempotencyConflict("this Idempotency-Key is in use; retry",
                                      param="Idempotency-Key")
        return QueuedCsv(existing, existing.total_jobs, 0, 0, replayed=True)
    submission_id = stored.submission.id
    try:
        tally = _stream_rows(session, submission_id, tenant, opened.jobs, cache,
                             reject=not opened.skip_bad_rows)
        if tally.error_count and (tally.fatal or not opened.skip_bad_rows):
            raise refuse_bad_rows(opened.name, tally.errors, tally.rows, MAX_REPORTED_ERRORS)
        if not tally.rows:
            raise InputFileError(f"{opened.name} holds no jobs")
        session.execute(update(Submission).where(Submission.id == submission_id)
                        .values(total_jobs=tally.rows))
        warnings = admit_counted(session, policy, tenant, tally.queued, tally.bounds())
        if warnings:
            stored.submission.warnings = warnings
    except BaseException:
        session.rollback()
        raise
    session.commit()
    metrics.record_exact_cache_hits(tally.hit_models.elements())
    session.refresh(stored.submission)
    return QueuedCsv(stored.submission, tally.rows, tally.error_count, tally.from_cache,
                     replayed=False)


def queue_csv(
    session: Session,
    source: CsvSource,
    *,
    tenant: TenantRef,
    limits: IntakeLimits,
    policy: IntakePolicy,
    cache: CachePolicy | None,
    caps: JobCaps,
    idempotency_key: str | None = None,
    columns: dict[str, Any] | None = None,
    kind: str = "csv",
) -> QueuedCsv:
    """Queue every row of `source` as one submission and commit (see `queue_streamed`):
    a CSV without a header, or options that do not fit it, is refused before any write.
    `caps`: the tenant's max_tokens caps, applied to each row as its job is built."""

    def open_csv() -> StreamedFile:
        if source.fingerprint is None:
            source.stream.seek(0)
        reader = CsvReader(source.stream, name=source.name,
                           max_cell_chars=source.max_cell_chars,
                           encoding=source.options.encoding)
        mapping = csv_mapping(reader.header, source.options)
        return StreamedFile(source.name, (_row_job(item, mapping, limits, caps)
                                          for item in reader),
                            source.options.skip_bad_rows,
                            {"input_columns": list(reader.header)})

    return queue_streamed(session, source.digest(columns), open_csv, tenant=tenant,
                          policy=policy, cache=cache, idempotency_key=idempotency_key,
                          columns=columns, kind=kind)
