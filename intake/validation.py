"""Validating OpenAI batches off the request: `POST /v1/batches` stores a batch as
`validating` with no jobs; this step, run by the coalescer, parses its input file and
either queues every line or fails the batch naming every bad line. The parsing itself is
the pure `parse_batch_file`; this is the I/O around it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy.orm import Session, sessionmaker

from cache.keys import CachePolicy
from intake.batches import line_job
from intake.limits import IntakeLimits
from intake.openai_lines import BatchLineError, parse_batch_file
from models.batches import claim_validating_batch, fail_batch, open_without_jobs, start_batch
from models.files import get_file
from storage.port import ObjectStore


class Outcome(StrEnum):
    QUEUED = "queued"  # every line is a queued job; the batch is in progress
    FAILED = "failed"  # a bad line (or a missing file): nothing queued
    CANCELLED = "cancelled"  # cancelled while it waited: nothing queued, ready to finalize


@dataclass(frozen=True)
class Validated:
    batch_id: uuid.UUID
    outcome: Outcome
    jobs: int
    from_cache: int = 0  # of `jobs`, answered from the exact result cache at once


def _time_left(expires_at: datetime | None) -> timedelta | None:
    """The batch's window is each job's deadline (the coalescer sends jobs near it first),
    counted from the batch's creation, not from when it was validated."""
    if expires_at is None:
        return None
    return max(expires_at - datetime.now(UTC), timedelta(0))


def validate_next_batch(
    sessions: sessionmaker[Session], store: ObjectStore, limits: IntakeLimits,
    max_requests: int, cache: CachePolicy | None,
) -> Validated | None:
    """Validate the oldest batch waiting for it; None when none waits (or every waiting
    one is being validated elsewhere).

    One transaction holds the batch's row lock from claim to commit, so the jobs and the
    batch's move to `open` (or `failed`) land together, and a concurrent validator skips
    the batch. An error reading the file (a storage blip) rolls back: the batch stays
    `validating` and the next call tries again. Lines the exact result cache answers
    (`cache`) are done in that same transaction.
    """
    with sessions() as session:
        batch = claim_validating_batch(session)
        if batch is None:
            session.rollback()
            return None
        batch_id = batch.id  # commit expires the row; the id is all that is needed after
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
        jobs = [replace(line_job(line), complete_within=_time_left(batch.expires_at))
                for line in parsed.lines]
        from_cache = start_batch(session, batch, jobs, cache)
        session.commit()
        return Validated(batch_id, Outcome.QUEUED, len(jobs), len(from_cache))
