"""Managing the exact result cache: listing, inspecting, deleting and purging entries, and
its statistics. Every query is scoped to one tenant, except where the operator's CLI asks
for all of them (tenant None)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import ColumnElement, and_, delete, func, select, true, tuple_
from sqlalchemy.orm import Session

from cache.keys import CacheMode
from ledger.pricing import SERVED_BY_EXACT_CACHE
from models.tables import Job, LedgerEntry, ResultCacheEntry, Tenant


def _scoped(tenant_id: uuid.UUID | None) -> ColumnElement[bool]:
    return ResultCacheEntry.tenant_id == tenant_id if tenant_id is not None else true()


@dataclass(frozen=True)
class EntryPage:
    entries: list[ResultCacheEntry]
    has_more: bool


def list_entries(
    session: Session, tenant_id: uuid.UUID | None, *, limit: int,
    after: uuid.UUID | None = None,
) -> EntryPage:
    """Newest first; `after` (an entry id of the previous page) pages towards older ones,
    keyset on (created_at, id), so a page never repeats or skips an entry."""
    query = select(ResultCacheEntry).where(_scoped(tenant_id))
    if after is not None:
        cursor = session.execute(
            select(ResultCacheEntry.created_at, ResultCacheEntry.id)
            .where(ResultCacheEntry.id == after, _scoped(tenant_id))
        ).one_or_none()
        if cursor is not None:
            query = query.where(tuple_(ResultCacheEntry.created_at, ResultCacheEntry.id)
                                < tuple_(cursor.created_at, cursor.id))
    rows = list(session.execute(
        query.order_by(ResultCacheEntry.created_at.desc(), ResultCacheEntry.id.desc())
        .limit(limit + 1)
    ).scalars())
    return EntryPage(entries=rows[:limit], has_more=len(rows) > limit)


def get_entry(
    session: Session, tenant_id: uuid.UUID, entry_id: uuid.UUID
) -> ResultCacheEntry | None:
    """Another tenant's entry is not found, as if it did not exist."""
    return session.execute(
        select(ResultCacheEntry).where(ResultCacheEntry.id == entry_id,
                                       ResultCacheEntry.tenant_id == tenant_id)
    ).scalar_one_or_none()


def delete_entry(session: Session, tenant_id: uuid.UUID, entry_id: uuid.UUID) -> bool:
    """Delete one of the tenant's entries; False when it has none with that id. The caller
    commits."""
    deleted = session.execute(
        delete(ResultCacheEntry)
        .where(ResultCacheEntry.id == entry_id, ResultCacheEntry.tenant_id == tenant_id)
        .returning(ResultCacheEntry.id)
    ).scalar_one_or_none()
    return deleted is not None


def purge_entries(session: Session, tenant_id: uuid.UUID | None) -> int:
    """Delete every entry of a tenant (None: of every tenant); how many went. The caller
    commits."""
    return len(session.execute(
        delete(ResultCacheEntry).where(_scoped(tenant_id)).returning(ResultCacheEntry.id)
    ).all())


@dataclass(frozen=True)
class CacheStats:
    entries: int
    entry_hits: int  # hits counted on the entries there are now
    hits: int  # jobs answered from the cache (ledger rows), deleted entries included
    misses: int  # deterministic jobs with the cache on that ran instead
    saved_usd: Decimal  # what producing the answers served from the cache had cost


def cache_stats(session: Session, tenant_id: uuid.UUID | None) -> CacheStats:
    """Counted from the entries and the ledger when asked, so intake never pays for them."""
    entries, entry_hits = session.execute(
        select(func.count(), func.coalesce(func.sum(ResultCacheEntry.hits), 0))
        .where(_scoped(tenant_id))
    ).one()
    ledger_scope = LedgerEntry.tenant_id == tenant_id if tenant_id is not None else true()
    hits, saved = session.execute(
        select(func.count(), func.coalesce(func.sum(LedgerEntry.cache_saved_usd), 0))
        .where(ledger_scope, LedgerEntry.served_by == SERVED_BY_EXACT_CACHE)
    ).one()
    # A miss: a job that could have been answered from the cache (deterministic, cache
    # "on") but was produced by a run, its own or its single-flight leader's.
    misses = session.execute(
        select(func.count()).select_from(LedgerEntry)
        .join(Job, Job.id == LedgerEntry.job_id)
        .where(ledger_scope, LedgerEntry.served_by != SERVED_BY_EXACT_CACHE,
               and_(Job.cache_mode == CacheMode.ON, Job.single_flight_key.is_not(None)))
    ).scalar_one()
    return CacheStats(entries=int(entries), entry_hits=int(entry_hits), hits=int(hits),
                      misses=int(misses), saved_usd=Decimal(saved))


def tenant_named(session: Session, name: str) -> uuid.UUID | None:
    """A tenant's id by name, without creating it (the CLI's read path)."""
    return session.execute(select(Tenant.id).where(Tenant.name == name)).scalar_one_or_none()


def tenant_names(session: Session) -> dict[uuid.UUID, str]:
    return {tenant_id: name for tenant_id, name in session.execute(select(Tenant.id, Tenant.name))}
