"""Queries on tenants and their API keys, and what the per-tenant limits count.

Reading never creates a tenant: `find_tenant` only reads. Tenants are created where they
are declared (a key is made for one, a bootstrap key or the no-auth default names one),
once per process for the configured ones (see `api.auth`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models.status import JobStatus
from models.tables import ApiKey, Job, LedgerEntry, Tenant
from tenancy.budgets import MonthSpend, TokenBound
from tenancy.keys import hash_key, new_key, shown_prefix

_UNFINISHED = (JobStatus.QUEUED, JobStatus.BATCHED, JobStatus.RUNNING)


@dataclass(frozen=True)
class TenantRef:
    id: uuid.UUID
    name: str


def find_tenant(session: Session, name: str) -> TenantRef | None:
    tenant_id = session.execute(select(Tenant.id).where(Tenant.name == name)).scalar_one_or_none()
    return TenantRef(tenant_id, name) if tenant_id is not None else None


def ensure_tenant(session: Session, name: str) -> TenantRef:
    """The tenant called `name`, created if new. The caller commits."""
    session.execute(insert(Tenant).values(id=uuid.uuid4(), name=name).on_conflict_do_nothing())
    tenant_id = session.execute(select(Tenant.id).where(Tenant.name == name)).scalar_one()
    return TenantRef(tenant_id, name)


def resolve_key(session: Session, key_hash: str) -> TenantRef | None:
    """The tenant of a live key, touching its last_used_at: one indexed statement. The
    caller commits."""
    row = session.execute(
        update(ApiKey)
        .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None),
               ApiKey.tenant_id == Tenant.id)
        .values(last_used_at=func.now())
        .returning(Tenant.id, Tenant.name)
    ).one_or_none()
    return TenantRef(row[0], row[1]) if row is not None else None


def any_key_exists(session: Session) -> bool:
    """True once any key was ever made (revoked ones stay): auth never switches off again
    because the last key was revoked."""
    return session.execute(select(ApiKey.id).limit(1)).first() is not None


@dataclass(frozen=True)
class KeyInfo:
    id: uuid.UUID
    tenant: str
    name: str | None
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def _info(key: ApiKey, tenant: str) -> KeyInfo:
    return KeyInfo(id=key.id, tenant=tenant, name=key.name, prefix=key.prefix,
                   created_at=key.created_at, last_used_at=key.last_used_at,
                   revoked_at=key.revoked_at)


def create_key(session: Session, tenant: str, name: str | None) -> tuple[KeyInfo, str]:
    """A new key for `tenant` (created if new): its row and the plain key, which is shown
    this once and never stored. The caller commits."""
    owner = ensure_tenant(session, tenant)
    key = new_key()
    row = ApiKey(id=uuid.uuid4(), tenant_id=owner.id, name=name, prefix=shown_prefix(key),
                 key_hash=hash_key(key))
    session.add(row)
    session.flush()
    session.refresh(row)
    return _info(row, tenant), key


def list_keys(session: Session, tenant: str | None = None) -> list[KeyInfo]:
    query = (select(ApiKey, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id)
             .order_by(ApiKey.created_at, ApiKey.id))
    if tenant is not None:
        query = query.where(Tenant.name == tenant)
    return [_info(key, name) for key, name in session.execute(query).all()]


def revoke_key(session: Session, key_id: uuid.UUID) -> KeyInfo | None:
    """Revoke a key (revoking it again keeps the first time). The caller commits."""
    session.execute(update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                    .values(revoked_at=func.now()))
    row = session.execute(select(ApiKey, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id)
                          .where(ApiKey.id == key_id)).one_or_none()
    return _info(row[0], row[1]) if row is not None else None


def queued_job_count(session: Session, tenant_id: uuid.UUID, up_to: int) -> int:
    """The tenant's queued jobs, counted no further than `up_to` (bounded: the index walk
    stops there however deep the queue is)."""
    queued = (select(Job.id).where(Job.tenant_id == tenant_id, Job.status == JobStatus.QUEUED)
              .limit(up_to).subquery())
    return int(session.execute(select(func.count()).select_from(queued)).scalar_one())


def month_spend(session: Session, tenant_id: uuid.UUID, since: datetime) -> MonthSpend:
    """What the ledger billed the tenant since `since`, and its unfinished jobs' bounds per
    model (prompt estimate and max_tokens; embeddings have no output)."""
    billed = session.execute(
        select(func.coalesce(func.sum(LedgerEntry.cost_usd), 0))
        .where(LedgerEntry.tenant_id == tenant_id, LedgerEntry.created_at >= since)
    ).scalar_one()
    max_tokens = func.coalesce(
        Job.request["sampling"]["max_tokens"].as_integer(), 0)
    rows = session.execute(
        select(Job.model, func.sum(Job.estimated_tokens), func.sum(max_tokens))
        .where(Job.tenant_id == tenant_id, Job.status.in_(_UNFINISHED))
        .group_by(Job.model)
    ).all()
    reserved = [TokenBound(model, int(estimated) - int(output), int(output))
                for model, estimated, output in rows]
    return MonthSpend(billed_usd=Decimal(billed), reserved=reserved)
