"""Admitting a submission for a tenant: the queued-jobs limit, the monthly budget and the
idempotency window. The checks run inside the submission's own transaction, after its rows
are written and before they commit, so a refused submission leaves nothing behind and a
replayed one (same Idempotency-Key) is never refused for limits it already passed.

With a limit or budget in force for the tenant, its submissions take a per-tenant
transaction lock first: two submissions at once cannot both slip under the limit. Without
one, admission costs no query at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.submissions import NewJob
from models.tenants import TenantRef, month_spend, queued_job_count
from penny.errors import QueueFull
from penny.settings import Budget, ModelPrice, Settings
from tenancy.budgets import TokenBound, check_budget, month_start, worst_case_usd

_DEFAULT_PRICE = ModelPrice()


@dataclass(frozen=True)
class IntakePolicy:
    idempotency_window: timedelta = timedelta(hours=24)
    max_queued_jobs: int | None = None
    retry_after_seconds: int = 30
    budgets: Mapping[str, Budget] = field(default_factory=dict)
    price_for: Callable[[str], ModelPrice] = lambda _model: _DEFAULT_PRICE

    @classmethod
    def from_settings(cls, settings: Settings) -> IntakePolicy:
        return cls(
            idempotency_window=timedelta(seconds=settings.idempotency_window_seconds),
            max_queued_jobs=settings.max_queued_jobs_per_tenant,
            retry_after_seconds=settings.queue_full_retry_after_seconds,
            budgets=dict(settings.tenant_budgets),
            price_for=settings.price_for,
        )

    def idempotency_cutoff(self) -> datetime:
        """Keys used before this are forgotten: their reuse is a new request."""
        return datetime.now(UTC) - self.idempotency_window


def token_bounds(jobs: Sequence[NewJob]) -> list[TokenBound]:
    bounds = []
    for job in jobs:
        if job.error is not None:
            continue  # stored failed: it never runs, never costs
        output = int(job.request.get("sampling", {}).get("max_tokens", 0))
        bounds.append(TokenBound(job.model, job.estimated_tokens - output, output))
    return bounds


def _lock_key(tenant_id: uuid.UUID) -> int:
    # pg advisory locks take a signed 64-bit key.
    return int.from_bytes(tenant_id.bytes[:8], "big", signed=True)


def admit(session: Session, policy: IntakePolicy, tenant: TenantRef, jobs: Sequence[NewJob]
          ) -> list[dict[str, object]]:
    """Check the tenant's limits with this submission's rows already written (uncommitted);
    raise QueueFull or BudgetExceeded, or return warnings to record on the submission."""
    own = token_bounds(jobs)
    return admit_counted(session, policy, tenant, len(own), own)


def admit_counted(session: Session, policy: IntakePolicy, tenant: TenantRef, count: int,
                  own: Sequence[TokenBound]) -> list[dict[str, object]]:
    """`admit` for `count` jobs already written whose token bounds `own` sums up (one
    bound per model will do: the worst case is linear in tokens), for intake that streams
    its jobs to the database rather than holding them."""
    budget = policy.budgets.get(tenant.name)
    if policy.max_queued_jobs is None and budget is None:
        return []
    session.execute(select(func.pg_advisory_xact_lock(_lock_key(tenant.id))))
    if policy.max_queued_jobs is not None:
        limit = policy.max_queued_jobs
        # Counted with this request's own (uncommitted) rows, and no further than needed.
        queued = queued_job_count(session, tenant.id, up_to=limit + count + 1)
        before = queued - count
        # A batch whose lines are not read yet brings no job now: it needs room left.
        if queued > limit or (not count and queued >= limit):
            raise QueueFull(
                f"tenant {tenant.name!r} may have {limit} jobs queued; {before} are queued "
                f"and this request adds {count or 'more'}. Retry once some have run",
                retry_after=policy.retry_after_seconds, param="jobs")
    if budget is None:
        return []
    spend = month_spend(session, tenant.id, month_start(datetime.now(UTC)))
    asked = worst_case_usd(own, policy.price_for)
    reserved = worst_case_usd(spend.reserved, policy.price_for) - asked  # not our own rows
    return check_budget(tenant.name, budget, spend.billed_usd, max(reserved, Decimal(0)),
                        asked)
