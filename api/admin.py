"""The admin API (`/v1/admin/keys`): make, list and revoke tenants' API keys. Guarded by
PENNY_ADMIN_API_KEYS; tenant keys never open it. A new key is shown once, in the create
answer; after that only its prefix is."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Admin, sessions_of
from api.errors import error_responses
from api.json_body import JsonBodyRoute
from api.links import link, links
from intake.text import StorableText
from models.tenants import KeyInfo, create_key, list_keys, revoke_key
from penny.errors import NotFound

router = APIRouter(prefix="/v1/admin", route_class=JsonBodyRoute,
                   responses=error_responses(400, 401, 404, 413, 422))

TenantName = Annotated[StorableText, Field(min_length=1, max_length=200)]


class CreateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: TenantName
    name: Annotated[StorableText, Field(min_length=1, max_length=200)] | None = None


class ApiKeyOut(BaseModel):
    id: str
    object: str = "api_key"
    tenant: str
    name: str | None
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, info: KeyInfo) -> ApiKeyOut:
        return cls(id=str(info.id), tenant=info.tenant, name=info.name, prefix=info.prefix,
                   created_at=info.created_at, last_used_at=info.last_used_at,
                   revoked_at=info.revoked_at)


class NewApiKey(ApiKeyOut):
    key: str  # the only time the key is shown


class ApiKeyList(BaseModel):
    object: str = "list"
    data: list[ApiKeyOut]


@router.post("/keys", status_code=201, responses=links(
    201, RevokeKey=link("/v1/admin/keys/{key_id}/revoke", "post", key_id="$response.body#/id")))
def create(body: CreateKey, request: Request, _: Admin) -> NewApiKey:
    with sessions_of(request)() as session:
        info, key = create_key(session, body.tenant, body.name)
        session.commit()
    return NewApiKey(**ApiKeyOut.of(info).model_dump(), key=key)


@router.get("/keys")
def read_all(
    request: Request, _: Admin,
    tenant: Annotated[StorableText | None, Query(max_length=200)] = None,
) -> ApiKeyList:
    with sessions_of(request)() as session:
        return ApiKeyList(data=[ApiKeyOut.of(k) for k in list_keys(session, tenant)])


@router.post("/keys/{key_id}/revoke")
def revoke(key_id: str, request: Request, _: Admin) -> ApiKeyOut:
    """Revoked keys stop working within PENNY_KEY_CACHE_SECONDS on every server."""
    try:
        parsed = uuid.UUID(key_id)
    except ValueError:
        raise NotFound(f"no API key with id {key_id!r}", param="key_id") from None
    with sessions_of(request)() as session:
        info = revoke_key(session, parsed)
        session.commit()
    if info is None:
        raise NotFound(f"no API key with id {key_id!r}", param="key_id")
    return ApiKeyOut.of(info)
