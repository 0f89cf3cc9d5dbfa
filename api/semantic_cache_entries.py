"""Managing the caller's semantic cache (list, inspect, delete, purge, statistics) and
correcting any cached answer, exact or semantic (`PATCH /v1/cache/entries/{id}`): the
corrected answer is served from then on. Another tenant's entry is a 404."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.deps import Tenant, sessions_of
from api.errors import error_responses
from api.json_body import JsonBodyRoute
from intake.text import unstorable_reason
from models.semantic_cache_admin import (
    correct_entry,
    delete_semantic_entry,
    get_semantic_entry,
    list_semantic_entries,
    purge_semantic_entries,
    semantic_stats,
)
from penny.errors import InvalidRequest, NotFound

router = APIRouter(prefix="/v1/cache", route_class=JsonBodyRoute,
                   responses=error_responses(400, 401, 404, 413, 422))


class SemanticEntryOut(BaseModel):
    id: str
    object: str = "cache.semantic_entry"
    model: str
    question: str
    embedding_model: str
    source_job_id: str
    text: str
    finish_reason: str
    usage: dict[str, int]
    cost_usd: str  # what producing the answer cost: what each hit saves
    hits: int
    last_hit_at: datetime | None
    # Audited outcomes, [similarity, correct]; an entry never serves again at or below the
    # similarity of a wrong one.
    outcomes: list[list[Any]]
    corrected_at: datetime | None
    created_at: datetime
    expires_at: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> SemanticEntryOut:
        return cls(
            id=str(row["id"]), model=row["model"], question=row["question"],
            embedding_model=row["embedding_model"], source_job_id=str(row["source_job_id"]),
            text=row["text"], finish_reason=row["finish_reason"],
            usage={"prompt_tokens": row["prompt_tokens"],
                   "cached_tokens": row["cached_tokens"],
                   "completion_tokens": row["output_tokens"]},
            cost_usd=f"{row['cost_usd']:f}", hits=row["hits"], last_hit_at=row["last_hit_at"],
            outcomes=row["outcomes"], corrected_at=row["corrected_at"],
            created_at=row["created_at"], expires_at=row["expires_at"],
        )


class SemanticEntryList(BaseModel):
    object: str = "list"
    data: list[SemanticEntryOut]
    first_id: str | None
    last_id: str | None
    has_more: bool


class SemanticStatsOut(BaseModel):
    object: str = "cache.semantic_stats"
    entries: int
    hits: int
    misses: int
    audits: int
    audit_mismatches: int
    rejections: dict[str, int]  # candidates turned down, by reason
    saved_usd: str


class Correction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=200_000)

    @field_validator("text")
    @classmethod
    def _storable(cls, text: str) -> str:
        reason = unstorable_reason(text)
        if reason is not None:
            raise ValueError(f"the answer {reason}")
        return text


def _entry_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound(f"no cache entry with id {raw!r}", param="entry_id") from None


@router.patch("/entries/{entry_id}")
def correct_cache_entry(entry_id: str, request: Request, tenant: Tenant,
                        correction: Correction | None = None) -> dict[str, Any]:
    """Replace a cached answer (exact or semantic entry) with a corrected one."""
    with sessions_of(request)() as session:
        # Whose entry it is is answered first: another tenant's id is a 404 with or
        # without a body, as on every other route.
        kind = correct_entry(session, tenant.id, _entry_id(entry_id),
                             correction.text if correction is not None else None)
        if correction is not None:
            session.commit()
    if kind is None:
        raise NotFound(f"no cache entry with id {entry_id!r}", param="entry_id")
    if correction is None:
        raise InvalidRequest("the corrected answer is required: {\"text\": \"...\"}",
                             param="text")
    return {"id": entry_id, "object": "cache.entry.corrected", "kind": kind,
            "text": correction.text}


@router.get("/semantic/entries")
def list_semantic_cache_entries(
    request: Request, tenant: Tenant,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str | None = None,
) -> SemanticEntryList:
    cursor = None
    if after:
        try:
            cursor = uuid.UUID(after)
        except ValueError:
            raise InvalidRequest(f"after {after!r} is not a cache entry id",
                                 param="after") from None
    with sessions_of(request)() as session:
        page = list_semantic_entries(session, tenant.id, limit=limit, after=cursor)
    data = [SemanticEntryOut.from_row(row) for row in page.entries]
    return SemanticEntryList(data=data, first_id=data[0].id if data else None,
                             last_id=data[-1].id if data else None, has_more=page.has_more)


@router.get("/semantic/entries/{entry_id}")
def read_semantic_cache_entry(entry_id: str, request: Request,
                              tenant: Tenant) -> SemanticEntryOut:
    with sessions_of(request)() as session:
        row = get_semantic_entry(session, tenant.id, _entry_id(entry_id))
    if row is None:
        raise NotFound(f"no cache entry with id {entry_id!r}", param="entry_id")
    return SemanticEntryOut.from_row(row)


@router.delete("/semantic/entries/{entry_id}")
def delete_semantic_cache_entry(entry_id: str, request: Request,
                                tenant: Tenant) -> dict[str, Any]:
    with sessions_of(request)() as session:
        deleted = delete_semantic_entry(session, tenant.id, _entry_id(entry_id))
        session.commit()
    if not deleted:
        raise NotFound(f"no cache entry with id {entry_id!r}", param="entry_id")
    return {"id": entry_id, "object": "cache.semantic_entry.deleted", "deleted": True}


@router.delete("/semantic/entries")
def purge_semantic_cache(request: Request, tenant: Tenant) -> dict[str, Any]:
    with sessions_of(request)() as session:
        deleted = purge_semantic_entries(session, tenant.id)
        session.commit()
    return {"object": "cache.semantic_purged", "deleted": deleted}


@router.get("/semantic/stats")
def read_semantic_cache_stats(request: Request, tenant: Tenant) -> SemanticStatsOut:
    with sessions_of(request)() as session:
        stats = semantic_stats(session, tenant.id)
    return SemanticStatsOut(entries=stats.entries, hits=stats.hits, misses=stats.misses,
                            audits=stats.audits, audit_mismatches=stats.audit_mismatches,
                            rejections=stats.rejections, saved_usd=f"{stats.saved_usd:f}")
