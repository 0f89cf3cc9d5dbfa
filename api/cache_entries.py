"""Managing the caller's exact result cache: list, inspect and delete entries, purge them
all, and see what the cache saved. Another tenant's entry is a 404, as if it did not
exist."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from api.deps import Tenant, sessions_of
from api.errors import error_responses
from api.json_body import JsonBodyRoute
from models.cache_admin import cache_stats, delete_entry, get_entry, list_entries, purge_entries
from models.tables import ResultCacheEntry
from penny.errors import InvalidRequest, NotFound

router = APIRouter(prefix="/v1/cache", route_class=JsonBodyRoute,
                   responses=error_responses(400, 401, 404, 413, 422))


class CacheEntryOut(BaseModel):
    id: str
    object: str = "cache.entry"
    model: str
    source_job_id: str
    request: dict[str, Any]  # the stored request the key was made from
    text: str
    finish_reason: str
    embedding_dimensions: int | None
    usage: dict[str, int]
    cost_usd: str  # what producing the answer cost: what each hit saves
    list_cost_usd: str
    hits: int
    last_hit_at: datetime | None
    created_at: datetime
    expires_at: datetime

    @classmethod
    def from_row(cls, row: ResultCacheEntry) -> CacheEntryOut:
        return cls(
            id=str(row.id), model=row.model, source_job_id=str(row.source_job_id),
            request=row.request, text=row.text, finish_reason=row.finish_reason,
            embedding_dimensions=row.embedding_dimensions,
            usage={"prompt_tokens": row.prompt_tokens, "cached_tokens": row.cached_tokens,
                   "completion_tokens": row.output_tokens},
            cost_usd=f"{row.cost_usd:f}", list_cost_usd=f"{row.list_cost_usd:f}",
            hits=row.hits, last_hit_at=row.last_hit_at, created_at=row.created_at,
            expires_at=row.expires_at,
        )


class CacheEntryList(BaseModel):
    object: str = "list"
    data: list[CacheEntryOut]
    first_id: str | None
    last_id: str | None
    has_more: bool


class CacheStatsOut(BaseModel):
    object: str = "cache.stats"
    entries: int
    entry_hits: int  # hits counted on the entries kept now
    hits: int  # jobs answered from the cache
    misses: int  # deterministic jobs with the cache on that a run produced instead
    saved_usd: str  # what producing the answers served from the cache had cost


def _entry_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound(f"no cache entry with id {raw!r}", param="entry_id") from None


def _cursor(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise InvalidRequest(f"after {raw!r} is not a cache entry id", param="after") from None


@router.get("/entries")
def list_cache_entries(
    request: Request, tenant: Tenant,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str | None = None,
) -> CacheEntryList:
    with sessions_of(request)() as session:
        page = list_entries(session, tenant.id, limit=limit,
                            after=_cursor(after) if after else None)
    data = [CacheEntryOut.from_row(row) for row in page.entries]
    return CacheEntryList(data=data, first_id=data[0].id if data else None,
                          last_id=data[-1].id if data else None, has_more=page.has_more)


@router.get("/entries/{entry_id}")
def read_cache_entry(entry_id: str, request: Request, tenant: Tenant) -> CacheEntryOut:
    with sessions_of(request)() as session:
        row = get_entry(session, tenant.id, _entry_id(entry_id))
    if row is None:
        raise NotFound(f"no cache entry with id {entry_id!r}", param="entry_id")
    return CacheEntryOut.from_row(row)


@router.delete("/entries/{entry_id}")
def delete_cache_entry(entry_id: str, request: Request, tenant: Tenant) -> dict[str, Any]:
    with sessions_of(request)() as session:
        deleted = delete_entry(session, tenant.id, _entry_id(entry_id))
        session.commit()
    if not deleted:
        raise NotFound(f"no cache entry with id {entry_id!r}", param="entry_id")
    return {"id": entry_id, "object": "cache.entry.deleted", "deleted": True}


@router.delete("/entries")
def purge_cache(request: Request, tenant: Tenant) -> dict[str, Any]:
    """Every entry of the caller's tenant; later jobs run again and refill it."""
    with sessions_of(request)() as session:
        deleted = purge_entries(session, tenant.id)
        session.commit()
    return {"object": "cache.purged", "deleted": deleted}


@router.get("/stats")
def read_cache_stats(request: Request, tenant: Tenant) -> CacheStatsOut:
    with sessions_of(request)() as session:
        stats = cache_stats(session, tenant.id)
    return CacheStatsOut(entries=stats.entries, entry_hits=stats.entry_hits, hits=stats.hits,
                         misses=stats.misses, saved_usd=f"{stats.saved_usd:f}")
