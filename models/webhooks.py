"""Queries on the webhook outbox: recording a submission's end as an event to deliver (in
the transaction that ends it), claiming due deliveries, logging attempts, reading the log,
retrying, and a tenant's default endpoint."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from compat.records import CostFigures
from delivery.events import Ended, event_body, event_payload
from delivery.schedule import AttemptResult, Decision, DeliveryStatus
from models.tables import (
    Submission,
    Tenant,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)


def record_end(
    session: Session,
    submission_id: uuid.UUID,
    *,
    status: str,
    counts: Mapping[str, int],
    cost: CostFigures,
    outputs: Mapping[str, str] | None = None,
) -> uuid.UUID | None:
    """Queue the event announcing that a submission ends in `status`, if it has a callback
    URL (its own, or its tenant's default). `outputs`: where finalize put the outputs, if it
is finalize that ends it. Call it in the transaction that ends the
    submission; the caller commits. The event id is derived from the submission, so a
    second call (a submission finalized twice) adds nothing. Returns the delivery's id."""
    row = session.execute(
        select(Submission.kind, Submission.tenant_id, Submission.callback_url,
               Submission.cancelling_at, Submission.expired_at, Submission.total_jobs,
               Submission.outputs, Submission.output_file_id, Submission.error_file_id,
               Submission.errors, Tenant.webhook_url, func.now())
        .join(Tenant, Tenant.id == Submission.tenant_id)
        .where(Submission.id == submission_id)
    ).one()
    url = row.callback_url or row.webhook_url
    if not url:
        return None
    ended = Ended(
        submission_id=submission_id, kind=row.kind, status=status,
        cancelling=row.cancelling_at is not None, expired=row.expired_at is not None,
        ended_at=row[-1], total_jobs=row.total_jobs, counts=counts, cost=cost,
        outputs=outputs or row.outputs, output_file_id=row.output_file_id,
        error_file_id=row.error_file_id, validation_errors=len(row.errors or []),
    )
    payload = event_payload(ended)
    return session.execute(
        insert(WebhookDelivery)
        .values(id=uuid.uuid4(), event_id=payload["id"], tenant_id=row.tenant_id,
                submission_id=submission_id, event_type=payload["type"],
                payload=event_body(payload), url=url, status=DeliveryStatus.PENDING,
                next_attempt_at=func.now())
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(WebhookDelivery.id)
    ).scalar_one_or_none()


@dataclass(frozen=True)
class Claimed:
    delivery_id: uuid.UUID
    claim_token: uuid.UUID
    attempt: int  # the number of this attempt in its round, from 1
    tenant: str
    url: str
    event_id: str
    payload: str


def any_due(session: Session, now: datetime) -> bool:
    return session.execute(
        select(WebhookDelivery.id).where(WebhookDelivery.status == DeliveryStatus.PENDING,
                                         WebhookDelivery.next_attempt_at <= now).limit(1)
    ).first() is not None


def claim_due(session: Session, now: datetime, limit: int, lease: timedelta
              ) -> list[Claimed]:
    """Due deliveries, each claimed for one attempt: its next attempt moves out by
    `lease`, so if this process dies mid-attempt the delivery comes due again (at least
    once). SKIP LOCKED: two loops never take the same delivery. A delivery whose endpoint
    was disabled is marked so instead of claimed. The caller commits."""
    rows = session.execute(
        select(WebhookDelivery.id, WebhookDelivery.tenant_id, WebhookDelivery.url,
               WebhookDelivery.event_id, WebhookDelivery.payload, WebhookDelivery.attempts)
        .where(WebhookDelivery.status == DeliveryStatus.PENDING,
               WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not rows:
        return []
    tenants = {tenant_id: name for tenant_id, name in session.execute(
        select(Tenant.id, Tenant.name).where(Tenant.id.in_({r.tenant_id for r in rows})))}
    disabled = {(tenant_id, url) for tenant_id, url in session.execute(
        select(WebhookEndpoint.tenant_id, WebhookEndpoint.url).where(
            tuple_(WebhookEndpoint.tenant_id, WebhookEndpoint.url).in_(
                [(r.tenant_id, r.url) for r in rows]),
            WebhookEndpoint.disabled_at.is_not(None)))}
    claimed = []
    for row in rows:
        if (row.tenant_id, row.url) in disabled:
            session.execute(
                update(WebhookDelivery).where(WebhookDelivery.id == row.id)
                .values(status=DeliveryStatus.DISABLED, next_attempt_at=None, updated_at=now,
                        last_error="its endpoint answered 410 Gone to an earlier delivery"))
            continue
        token = uuid.uuid4()
        session.execute(
            update(WebhookDelivery).where(WebhookDelivery.id == row.id)
            .values(attempts=row.attempts + 1, claim_token=token, last_attempt_at=now,
                    next_attempt_at=now + lease, updated_at=now))
        claimed.append(Claimed(row.id, token, row.attempts + 1, tenants[row.tenant_id],
                               row.url, row.event_id, row.payload))
    return claimed


def record_attempt(
    session: Session, claimed: Claimed, started_at: datetime, result: AttemptResult,
    decision: Decision, retry_after: float | None,
) -> bool:
    """Log the attempt and move the delivery on. The log row is always written; the
    delivery moves only if this claim still holds it (False otherwise: a retry through the
    API took it meanwhile). The caller commits."""
    session.add(WebhookAttempt(
        delivery_id=claimed.delivery_id, attempt=claimed.attempt, started_at=started_at,
        duration_ms=result.duration_ms, webhook_timestamp=result.webhook_timestamp,
        address=result.address, status_code=result.status_code, outcome=decision.status,
        error=result.error, retry_after_seconds=retry_after,
        next_attempt_at=decision.next_attempt_at, response_excerpt=result.response_excerpt,
    ))
    moved = session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == claimed.delivery_id,
               WebhookDelivery.claim_token == claimed.claim_token)
        .values(status=decision.status, next_attempt_at=decision.next_attempt_at,
                claim_token=None, last_status_code=result.status_code,
                last_error=result.error, updated_at=func.now(),
                delivered_at=(started_at if decision.status == DeliveryStatus.DELIVERED
                              else WebhookDelivery.delivered_at))
        .returning(WebhookDelivery.tenant_id)
    ).scalar_one_or_none()
    if moved is not None and decision.disable_endpoint:
        _disable_endpoint(session, moved, claimed.url,
                          f"answered 410 Gone to {claimed.event_id}")
    return moved is not None


def _disable_endpoint(session: Session, tenant_id: uuid.UUID, url: str, reason: str) -> None:
    session.execute(
        insert(WebhookEndpoint)
        .values(tenant_id=tenant_id, url=url, disabled_at=func.now(), disabled_reason=reason)
        .on_conflict_do_update(index_elements=["tenant_id", "url"],
                               set_={"disabled_at": func.now(), "disabled_reason": reason}))
    # The others waiting for it stop now, so the log shows why at once.
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.tenant_id == tenant_id, WebhookDelivery.url == url,
               WebhookDelivery.status == DeliveryStatus.PENDING,
               WebhookDelivery.claim_token.is_(None))
        .values(status=DeliveryStatus.DISABLED, next_attempt_at=None, updated_at=func.now(),
                last_error=f"its endpoint {reason}"))


# Reading and retrying, for the API (always within one tenant).

@dataclass(frozen=True)
class DeliveryPage:
    deliveries: list[WebhookDelivery]
    has_more: bool


def list_deliveries(
    session: Session, tenant_id: uuid.UUID, *, limit: int,
    submission_id: uuid.UUID | None = None, status: str | None = None,
    after: uuid.UUID | None = None,
) -> DeliveryPage:
    """Newest first, keyset-paginated on (created_at, id)."""
    query = select(WebhookDelivery).where(WebhookDelivery.tenant_id == tenant_id)
    if submission_id is not None:
        query = query.where(WebhookDelivery.submission_id == submission_id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    cursor = session.get(WebhookDelivery, after) if after else None
    if cursor is not None and cursor.tenant_id == tenant_id:
        query = query.where(tuple_(WebhookDelivery.created_at, WebhookDelivery.id)
                            < tuple_(cursor.created_at, cursor.id))
    rows = list(session.execute(
        query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
        .limit(limit + 1)).scalars())
    return DeliveryPage(rows[:limit], len(rows) > limit)


def get_delivery(session: Session, tenant_id: uuid.UUID, delivery_id: uuid.UUID
                 ) -> WebhookDelivery | None:
    return session.execute(
        select(WebhookDelivery).where(WebhookDelivery.id == delivery_id,
                                      WebhookDelivery.tenant_id == tenant_id)
    ).scalar_one_or_none()


def attempts_of(session: Session, delivery_id: uuid.UUID) -> Sequence[WebhookAttempt]:
    return session.execute(
        select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery_id)
        .order_by(WebhookAttempt.id)
    ).scalars().all()


def retry_delivery(session: Session, delivery: WebhookDelivery) -> None:
    """Send it again now, as a new round of attempts, with the same event id and body.
    Asking for it is also how an endpoint disabled by a 410 is turned back on. The caller
    commits."""
    session.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.tenant_id == delivery.tenant_id,
               WebhookEndpoint.url == delivery.url)
        .values(disabled_at=None, disabled_reason=None))
    session.execute(
        update(WebhookDelivery).where(WebhookDelivery.id == delivery.id)
        .values(status=DeliveryStatus.PENDING, attempts=0, claim_token=None,
                next_attempt_at=func.now(), updated_at=func.now()))


def endpoint_disabled_at(session: Session, tenant_id: uuid.UUID, url: str
                         ) -> datetime | None:
    return session.execute(
        select(WebhookEndpoint.disabled_at).where(WebhookEndpoint.tenant_id == tenant_id,
                                                  WebhookEndpoint.url == url)
    ).scalar_one_or_none()


def set_default_url(session: Session, tenant_id: uuid.UUID, url: str | None) -> None:
    """The caller commits."""
    session.execute(update(Tenant).where(Tenant.id == tenant_id).values(webhook_url=url))


def default_url(session: Session, tenant_id: uuid.UUID) -> str | None:
    return session.execute(
        select(Tenant.webhook_url).where(Tenant.id == tenant_id)).scalar_one_or_none()
