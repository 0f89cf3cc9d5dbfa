"""Single-flight in the database: finding in-flight twins, parking copies on their
leader's batch, and answering the copies when the leader's batch records."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from ledger.pricing import copied_answer_ledger
from models.status import JobStatus
from models.tables import Job, LedgerEntry, Result, result_row

if TYPE_CHECKING:
    from models.queue import JobOutcome


@dataclass(frozen=True)
class InFlight:
    leader_id: uuid.UUID
    batch_id: uuid.UUID


def in_flight_leaders(session: Session, keys: Sequence[str]) -> dict[str, InFlight]:
    """Leaders of identical requests that are batched or running, locked so that their
    batch cannot record (and miss a copy that joins now) until we commit. A leader whose
    batch is recording right now is skipped rather than waited for: waiting could deadlock
    with the worker's transaction, and the copy then simply runs on its own."""
    if not keys:
        return {}
    rows = session.execute(
        select(Job.single_flight_key, Job.id, Job.batch_id)
        .where(Job.single_flight_key.in_(keys), Job.leader_job_id.is_(None),
               Job.status.in_([JobStatus.BATCHED, JobStatus.RUNNING]))
        .order_by(Job.created_at)
        .with_for_update(skip_locked=True)
    ).all()
    found: dict[str, InFlight] = {}
    for key, job_id, batch_id in rows:
        if key is not None and batch_id is not None:
            found.setdefault(key, InFlight(job_id, batch_id))
    return found


def attach_followers(
    session: Session, followers: Mapping[str, str], leader_batches: Mapping[str, uuid.UUID]
) -> None:
    """Park copies on their leader's batch: they wait there, never run, and get the
    leader's answer when the batch records."""
    for follower, leader in followers.items():
        session.execute(
            update(Job)
            .where(Job.id == uuid.UUID(follower), Job.status == JobStatus.QUEUED)
            .values(status=JobStatus.BATCHED, batch_id=leader_batches[leader],
                    leader_job_id=uuid.UUID(leader), updated_at=func.now())
        )


def attach_queued_copies(
    session: Session, model: str, leaders: Mapping[str, tuple[str, uuid.UUID]]
) -> int:
    """Park every still-queued copy of a request that was just batched on its leader
    (`leaders`: single-flight key -> (leader job id, batch id)), including copies beyond
    the window's horizon: they are in flight together with the leader, and without this a
    copy planned a window later, after its leader recorded, would run again. Copies another
    coalescer holds are skipped. Returns how many copies joined."""
    if not leaders:
        return 0
    rows = session.execute(
        select(Job.id, Job.single_flight_key)
        .where(Job.status == JobStatus.QUEUED, Job.model == model,
               Job.single_flight_key.in_(list(leaders)))
        .with_for_update(skip_locked=True)
    ).all()
    followers = {str(job_id): leaders[key][0] for job_id, key in rows if key is not None}
    attach_followers(session, followers, dict(leaders.values()))
    return len(followers)


def answer_followers(
    session: Session, batch_id: uuid.UUID, outcomes: Sequence[JobOutcome]
) -> None:
    """Give every copy parked on this batch its leader's answer: the same result, and a
    ledger row that costs nothing and shows what it saved. A copy whose leader did not run
    (cancelled meanwhile, or sent to another tier) goes back to the queue to run on its
    own."""
    followers = session.execute(
        select(Job.id, Job.tenant_id, Job.submission_id, Job.leader_job_id)
        .where(Job.batch_id == batch_id, Job.leader_job_id.is_not(None),
               Job.status == JobStatus.BATCHED)
        .with_for_update()
    ).all()
    by_leader = {o.job.id: o for o in outcomes}
    results, ledgers, succeeded = [], [], []
    for follower_id, tenant_id, submission_id, leader_id in followers:
        outcome = by_leader.get(leader_id) if leader_id is not None else None
        if outcome is None or leader_id is None or outcome.reroute is not None:
            session.execute(
                update(Job).where(Job.id == follower_id)
                .values(status=JobStatus.QUEUED, batch_id=None, leader_job_id=None,
                        updated_at=func.now())
            )
        elif outcome.result is not None and outcome.ledger is not None:
            results.append(result_row(outcome.result, job_id=follower_id,
                                      batch_id=batch_id))
            ledgers.append({
                **copied_answer_ledger(outcome.ledger, leader_id),
                "job_id": follower_id, "tenant_id": tenant_id,
                "submission_id": submission_id, "batch_id": batch_id,
            })
            succeeded.append(follower_id)
        else:
            session.execute(
                update(Job).where(Job.id == follower_id)
                .values(status=JobStatus.FAILED, error=outcome.error, finished_at=func.now(),
                        updated_at=func.now())
            )
    if succeeded:
        session.execute(insert(Result), results)
        session.execute(insert(LedgerEntry), ledgers)
        session.execute(
            update(Job).where(Job.id.in_(succeeded))
            .values(status=JobStatus.SUCCEEDED, finished_at=func.now(), updated_at=func.now())
        )
