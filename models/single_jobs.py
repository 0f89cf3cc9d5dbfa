"""Single-job submissions written many at a time (the group writer's statements).

A group of single-job submissions (no idempotency key) goes in as one statement of fixed
text whatever the group's size: the submissions and their jobs travel as one JSON
document (a row per job), so psycopg prepares the statement after a few uses and Postgres
plans it once. Nothing is read back but what the caller answers with, and no ORM object
is made for rows only their ids answer for.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from psycopg import AsyncConnection
from sqlalchemy.orm import Session

from cache.keys import CachePolicy
from models.fast_rows import time_ordered_ids
from models.result_cache import ANSWER_COLUMNS, CachedAnswer, answer_of_row, record_cache_hits
from models.submissions import (
    JOB_ARRAY_TYPES,
    JOB_COLUMN_LIST,
    JOB_COLUMNS,
    NewJob,
    job_keys,
    job_rows,
)
from models.tables import ResultCacheEntry

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class SingleJobSubmission:
    """One single-job submission of a group written in one statement."""

    tenant_id: uuid.UUID
    job: NewJob
    request_hash: str
    # The exact cache key the job is looked up under (None: not looked up), and the
    # single-flight key its row is stored with.
    cache_key: str | None
    flight_key: str | None
    # The intake request's trace context (taken where the request is handled: the group
    # is written elsewhere).
    traceparent: str | None = None


def single_job_submission(tenant_id: uuid.UUID, job: NewJob, request_hash: str,
                          cache: CachePolicy | None, traceparent: str | None = None
                          ) -> SingleJobSubmission:
    """The entry for `job`, its cache key and single-flight key made from one encoding of
    its request (the exact cache's request key is the single-flight key for tenant "")."""
    cache_keys, flight_keys = job_keys([job], tenant_id, cache)
    return SingleJobSubmission(tenant_id, job, request_hash, cache_keys[0], flight_keys[0],
                               traceparent)


@dataclass(frozen=True)
class StoredSingleJob:
    """A single-job submission as written: all its request is answered with."""

    submission_id: uuid.UUID
    job_id: uuid.UUID
    from_cache: bool


async def write_single_jobs(
    connection: AsyncConnection[Any], entries: Sequence[SingleJobSubmission],
) -> tuple[list[StoredSingleJob | None], dict[int, CachedAnswer]]:
    """Insert, as queued, the submissions the exact cache has no live entry for, and read
    the answers of the others, in one statement on an autocommit `connection`: when this
    returns, the rows are committed (one statement is one transaction, and a commit is
    on disk before the server says it is done), with no BEGIN or COMMIT round trip.

    Returns what was stored (None where a live entry was found) and the answers found by
    position: only those need a second step (`insert_single_job_submissions` with those
    answers, in a transaction of their own). Tenant-scoped: a key is looked for only
    among its own tenant's entries. Entries without a key are not looked up; a group
    with no key at all takes the statement without the lookup."""
    assert connection.autocommit, "the statement is its own transaction"
    now = datetime.now(UTC)
    stored = _new_ids(entries, found=())
    parameters = _parameters(stored, entries, {}, now)
    lookup = any(entry.cache_key is not None for entry in entries)
    found: dict[int, CachedAnswer] = {}
    async with connection.cursor() as cursor:
        if not lookup:
            await cursor.execute(_INSERT, parameters)
        else:
            await cursor.execute(_INSERT_MISSES, parameters)
            # Ordinals count from 1.
            found = {row[0] - 1: answer_of_row(row[1:]) for row in await cursor.fetchall()}
    written: list[StoredSingleJob | None] = list(stored)
    for position in found:
        written[position] = None
    return written, found


def insert_single_job_submissions(
    session: Session, entries: Sequence[SingleJobSubmission],
    answers: Mapping[tuple[uuid.UUID, str], CachedAnswer],
) -> list[StoredSingleJob]:
    """Insert single-job submissions and their jobs in the session's transaction: those
    whose key `answers` holds (by tenant and key) as succeeded, with their results, ledger
    rows and hit counts; the rest queued. The caller commits."""
    now = datetime.now(UTC)
    hit = [entry.cache_key is not None and (entry.tenant_id, entry.cache_key) in answers
           for entry in entries]
    stored = _new_ids(entries, found=hit)
    hits = {s.job_id: answers[(e.tenant_id, e.cache_key)]
            for s, e in zip(stored, entries, strict=True)
            if s.from_cache and e.cache_key is not None}
    driver = session.connection().connection.driver_connection
    assert driver is not None
    # The driver's cursor on the session's own connection (same transaction), past the
    # ORM's execution and row machinery, which cost several times this statement.
    with driver.cursor() as cursor:
        cursor.execute(_INSERT, _parameters(stored, entries, hits, now))
    for one, entry in zip(stored, entries, strict=True):
        if one.from_cache:
            record_cache_hits(session, entry.tenant_id, one.submission_id,
                              {one.job_id: hits[one.job_id]})
    return stored


def _new_ids(entries: Sequence[SingleJobSubmission], found: Sequence[bool]
             ) -> list[StoredSingleJob]:
    # Time-ordered, as bulk intake's: new rows land at the right-hand end of the indexes.
    ids = time_ordered_ids(2 * len(entries))
    return [StoredSingleJob(submission_id=ids[2 * n], job_id=ids[2 * n + 1],
                            from_cache=bool(found) and found[n])
            for n in range(len(entries))]


def _parameters(stored: Sequence[StoredSingleJob], entries: Sequence[SingleJobSubmission],
                hits: Mapping[uuid.UUID, CachedAnswer], now: datetime) -> list[Any]:
    """The parameters `_statement` takes: the group's document, then the time. The
    document is written by msgspec in one call, each job's own documents nested as they
    are: as arrays, one per column, psycopg's per-element escaping of the JSON texts
    cost more than the rest of a job's intake."""
    rows = job_rows([(s.job_id, s.submission_id, e.tenant_id, e.job)
                     for s, e in zip(stored, entries, strict=True)], hits, now,
                    [e.flight_key for e in entries], document=_as_is)
    document = [dict(zip(_NAMES, (n, e.cache_key, e.request_hash, e.traceparent, *row),
                         strict=True))
                for n, (e, row) in enumerate(zip(entries, rows, strict=True), start=1)]
    return [_encode(document).decode(), now]


def _as_is(document: Any) -> Any:
    return document


_HIT = "hit_"  # the prefix of a found entry's columns beside the job's own
# Each row's fields in the group's JSON document, and their SQL types.
_FIELDS = (("n", "int"), ("cache_key", "text"), ("request_hash", "text"),
           ("traceparent", "text"),
           *zip(JOB_COLUMNS[1], JOB_ARRAY_TYPES, strict=True))
_NAMES = tuple(name for name, _ in _FIELDS)


def _statement(lookup: bool) -> str:
    """One submission and its job per row of the group's document (a JSON array of one
    object per row, `_FIELDS`), then the time. The submissions take their ids and tenants
    from the jobs' own fields. With `lookup`, each row's cache key (or null) is probed
    once, on the (tenant, key) index, for a live entry of the row's own tenant; rows
    with one are not inserted, and their ordinals and entries come back."""
    columns = ", ".join(f"{name} {kind}" for name, kind in _FIELDS)
    statement = f"WITH job AS (SELECT * FROM json_to_recordset(%s::json) AS j({columns})), "
    source = "job"
    if lookup:
        found = ", ".join(f"e.{column} AS {_HIT}{column}" for column in ANSWER_COLUMNS)
        # LIMIT 1 (the key is unique within a tenant) keeps the probe a nested index
        # lookup per row: the planner cannot turn it into a join over the whole table.
        statement += (
            f"looked AS (SELECT job.*, hit.* FROM job LEFT JOIN LATERAL (SELECT {found} "
            f"FROM {ResultCacheEntry.__tablename__} e WHERE e.tenant_id = job.tenant_id "
            # An expired entry is never served, even before the sweeper removes it.
            "AND e.cache_key = job.cache_key AND e.expires_at > now() LIMIT 1) hit ON true), ")
        source = f"looked WHERE {_HIT}id IS NULL"
    statement += (
        "submitted AS (INSERT INTO submissions (id, tenant_id, kind, status, request_hash, "
        "total_jobs, created_at, traceparent) SELECT submission_id, tenant_id, 'job', "
        f"'open', request_hash, 1, %s::timestamptz, traceparent FROM {source})")
    insert_jobs = f"INSERT INTO jobs ({JOB_COLUMN_LIST}) SELECT {JOB_COLUMN_LIST} FROM {source}"
    if not lookup:
        return f"{statement} {insert_jobs}"
    # What the lookup found is read in the same statement (the same snapshot).
    return (f"{statement}, inserted AS ({insert_jobs}) SELECT n, "
            + ", ".join(f"{_HIT}{column}" for column in ANSWER_COLUMNS)
            + f" FROM looked WHERE {_HIT}id IS NOT NULL")


_INSERT = _statement(lookup=False)
_INSERT_MISSES = _statement(lookup=True)
