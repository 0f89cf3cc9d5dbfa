"""Managing the semantic cache and correcting any cached answer: list, inspect, delete and
purge semantic entries, replace an entry's answer (exact or semantic: the corrected answer
is served from then on), and the semantic cache's statistics. Every query is scoped to one
tenant, except where the operator's CLI asks for all of them (tenant None). Where the
database has no vector table, there are no semantic entries."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, text, true, update
from sqlalchemy.orm import Session

from ledger.pricing import SERVED_BY_SEMANTIC_CACHE
from models.semantic_cache import ANSWER_FIELDS, read_counts, semantic_table_present
from models.tables import LedgerEntry, ResultCacheEntry

_COLUMNS = ("id", "tenant_id", "model", "context_key", "embedding_model", "question",
            "source_job_id", *ANSWER_FIELDS, "cost_usd", "list_cost_usd", "hits",
            "last_hit_at", "outcomes", "corrected_at", "created_at", "expires_at")
_SCOPE = "(CAST(:tenant AS uuid) IS NULL OR tenant_id = CAST(:tenant AS uuid))"


@dataclass(frozen=True)
class SemanticEntryPage:
    entries: list[dict[str, Any]]
    has_more: bool


def list_semantic_entries(
    session: Session, tenant_id: uuid.UUID | None, *, limit: int,
    after: uuid.UUID | None = None,
) -> SemanticEntryPage:
    """Newest first, keyset on (created_at, id) after the entry `after`."""
    if not semantic_table_present(session):
        return SemanticEntryPage([], False)
    cursor: datetime | None = None
    if after is not None:
        cursor = session.execute(text(
            f"SELECT created_at FROM semantic_cache WHERE id = :id AND {_SCOPE}"),
            {"id": after, "tenant": tenant_id}).scalar_one_or_none()
    keyset = "AND (created_at, id) < (:created, :after)" if cursor is not None else ""
    rows = session.execute(text(f"""
        SELECT {", ".join(_COLUMNS)} FROM semantic_cache WHERE {_SCOPE} {keyset}
        ORDER BY created_at DESC, id DESC LIMIT :limit"""),
        {"tenant": tenant_id, "created": cursor, "after": after, "limit": limit + 1},
    ).mappings().all()
    entries = [dict(row) for row in rows]
    return SemanticEntryPage(entries[:limit], len(entries) > limit)


def get_semantic_entry(
    session: Session, tenant_id: uuid.UUID, entry_id: uuid.UUID
) -> dict[str, Any] | None:
    """Another tenant's entry is not found, as if it did not exist."""
    if not semantic_table_present(session):
        return None
    row = session.execute(text(
        f"SELECT {', '.join(_COLUMNS)} FROM semantic_cache WHERE id = :id AND {_SCOPE}"),
        {"id": entry_id, "tenant": tenant_id}).mappings().one_or_none()
    return dict(row) if row is not None else None


def delete_semantic_entry(session: Session, tenant_id: uuid.UUID, entry_id: uuid.UUID) -> bool:
    """The caller commits."""
    if not semantic_table_present(session):
        return False
    return session.execute(text(
        "DELETE FROM semantic_cache WHERE id = :id AND tenant_id = :tenant RETURNING id"),
        {"id": entry_id, "tenant": tenant_id}).first() is not None


def purge_semantic_entries(session: Session, tenant_id: uuid.UUID | None) -> int:
    """Every semantic entry of a tenant (None: of every tenant); the caller commits."""
    if not semantic_table_present(session):
        return 0
    return len(session.execute(text(
        f"DELETE FROM semantic_cache WHERE {_SCOPE} RETURNING id"), {"tenant": tenant_id}
    ).all())


def correct_entry(
    session: Session, tenant_id: uuid.UUID | None, entry_id: uuid.UUID, answer: str | None
) -> str | None:
    """Replace the answer of an exact or semantic entry; the corrected answer is served
    from then on. Returns which kind it was ("exact" or "semantic"), None when the tenant
    (None: any tenant, for the operator's CLI) has no entry with that id. With `answer`
    None nothing changes: only which kind it is is answered. The caller commits."""
    scope = ResultCacheEntry.tenant_id == tenant_id if tenant_id is not None else true()
    if answer is None:
        found = session.execute(select(ResultCacheEntry.id).where(
            ResultCacheEntry.id == entry_id, scope)).first()
        if found is not None:
            return "exact"
        if not semantic_table_present(session):
            return None
        semantic_found = session.execute(text(
            f"SELECT id FROM semantic_cache WHERE id = :id AND {_SCOPE}"),
            {"id": entry_id, "tenant": tenant_id}).first()
        return "semantic" if semantic_found is not None else None
    exact = session.execute(
        update(ResultCacheEntry).where(ResultCacheEntry.id == entry_id, scope)
        .values(text=answer, corrected_at=func.now()).returning(ResultCacheEntry.id)
    ).first()
    if exact is not None:
        return "exact"
    if not semantic_table_present(session):
        return None
    semantic = session.execute(text(
        f"UPDATE semantic_cache SET text = :answer, corrected_at = now() "
        f"WHERE id = :id AND {_SCOPE} RETURNING id"),
        {"answer": answer, "id": entry_id, "tenant": tenant_id}).first()
    return "semantic" if semantic is not None else None


@dataclass(frozen=True)
class SemanticStats:
    entries: int
    hits: int  # jobs answered from the semantic cache (ledger rows)
    misses: int  # lookups that found no servable entry
    audits: int  # hits re-run on the engine to check them
    audit_mismatches: int  # audits whose fresh answer differed from the cached one
    rejections: dict[str, int] = field(default_factory=dict)  # candidates turned down, by why
    saved_usd: Decimal = Decimal(0)


def semantic_stats(session: Session, tenant_id: uuid.UUID) -> SemanticStats:
    entries = 0
    if semantic_table_present(session):
        entries = int(session.execute(text(
            "SELECT count(*) FROM semantic_cache WHERE tenant_id = :t"), {"t": tenant_id}
        ).scalar_one())
    hits, saved = session.execute(
        select(func.count(), func.coalesce(func.sum(LedgerEntry.cache_saved_usd), 0))
        .where(LedgerEntry.tenant_id == tenant_id,
               LedgerEntry.served_by == SERVED_BY_SEMANTIC_CACHE)
    ).one()
    counts = read_counts(session, tenant_id)
    rejections = {name.split(":", 1)[1]: n for name, n in sorted(counts.items())
                  if name.startswith("rejected:")}
    return SemanticStats(entries=entries, hits=int(hits), misses=counts.get("misses", 0),
                         audits=counts.get("audits", 0),
                         audit_mismatches=counts.get("audit_mismatches", 0),
                         rejections=rejections, saved_usd=Decimal(saved))
