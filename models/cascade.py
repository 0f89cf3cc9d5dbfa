"""Recording a cascade escalation, inside the transaction that records its batch.

The escalated attempt becomes a job row of its own (status `escalated`, `cascade_of` the
job): it holds the lower tier's answer and its ledger row, so both attempts are billed
and the ledger's one-row-per-job rule still holds. The job itself goes back to `queued`
on the next tier, where the coalescer batches it with everything else; its id, line and
custom_id never change, so the client sees one job with one final answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from models.status import JobStatus
from models.tables import Job, LedgerEntry, Result


@dataclass(frozen=True)
class Escalation:
    to_model: str
    reason: str
    min_logprob: float | None = None


@dataclass(frozen=True)
class EscalatedAttempt:
    job_id: uuid.UUID
    result: dict[str, Any]
    ledger: dict[str, Any]
    escalation: Escalation


def record_escalations(session: Session, batch_id: uuid.UUID, model: str,
                       attempts: Sequence[EscalatedAttempt]) -> None:
    """The caller holds the batch and commits."""
    for attempt in attempts:
        job = session.execute(
            select(Job).where(Job.id == attempt.job_id, Job.status == JobStatus.RUNNING)
            .with_for_update()
        ).scalar_one_or_none()
        if job is None:  # cancelled or expired while it ran: nothing goes on
            continue
        attempt_id = uuid.uuid4()
        escalation = attempt.escalation
        step = {"job_id": str(attempt_id), "model": model, "reason": escalation.reason,
                "mean_logprob": attempt.result.get("mean_logprob"),
                "min_logprob": escalation.min_logprob}
        route = dict(job.route or {})
        attempt_route = {**route, "tier": model,
                         "reason": f"escalated to {escalation.to_model}: {escalation.reason}"}
        session.execute(insert(Job).values(
            id=attempt_id, submission_id=job.submission_id, tenant_id=job.tenant_id,
            line_no=job.line_no, custom_id=job.custom_id, model=model, request=job.request,
            tags=job.tags, status=JobStatus.ESCALATED, priority=job.priority,
            estimated_tokens=job.estimated_tokens, attempts=job.attempts, batch_id=batch_id,
            cache_mode=job.cache_mode, route=attempt_route, cascade_of=job.id,
            finished_at=func.now()))
        session.execute(insert(Result).values(**attempt.result, job_id=attempt_id,
                                              batch_id=batch_id))
        session.execute(insert(LedgerEntry).values(
            **{**attempt.ledger, "route": f"cascade: {attempt_route['reason']}"[:200]},
            job_id=attempt_id, tenant_id=job.tenant_id, submission_id=job.submission_id,
            batch_id=batch_id))
        session.execute(update(Job).where(Job.id == job.id).values(
            status=JobStatus.QUEUED, model=escalation.to_model, batch_id=None,
            batch_position=None, updated_at=func.now(),
            route={**route, "tier": escalation.to_model,
                   "reason": f"escalated from {model}: {escalation.reason}",
                   "attempts": [*route.get("attempts", []), step]}))
