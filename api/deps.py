"""What route handlers take from the app: sessions, limits, the object store, settings,
the exact result cache's policy, and the caller's tenant."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session, sessionmaker

from api.auth import require_admin, tenant_for_request
from cache.keys import CachePolicy
from intake.admission import IntakePolicy
from intake.limits import IntakeLimits
from models.tenants import TenantRef
from penny.errors import InvalidRequest
from penny.settings import Settings
from storage.port import ObjectStore
from storage.s3_reader import S3Reader
from storage.s3_sources import SourcePolicy

Tenant = Annotated[TenantRef, Depends(tenant_for_request)]
Admin = Annotated[None, Depends(require_admin)]
# Every create endpoint takes one; a key is scoped to the tenant.
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
]


def replayed_response(model: type[Any]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI entry of a create that answers 202 when it creates: a retry with the
    same Idempotency-Key gets the original answer as a 200 (Idempotent-Replayed: true)."""
    return {200: {"model": model, "description": "The original answer to an earlier "
                  "request with the same Idempotency-Key (header Idempotent-Replayed: true)"}}


async def single_form_fields(request: Request) -> None:
    """A multipart form names each field once: a second `file` part (or any field sent
    twice) would otherwise be dropped without a word, and its rows never queued."""
    form = await request.form()  # the form the route already parsed (kept on the request)
    repeated = sorted(key for key in form if len(form.getlist(key)) > 1)
    if repeated:
        raise InvalidRequest("each form field is sent once; sent more than once: "
                             + ", ".join(repeated), param=repeated[0])


def sessions_of(request: Request) -> sessionmaker[Session]:
    sessions: sessionmaker[Session] = request.app.state.sessions
    return sessions


def limits_of(request: Request) -> IntakeLimits:
    limits: IntakeLimits = request.app.state.intake_limits
    return limits


def policy_of(request: Request) -> IntakePolicy:
    policy: IntakePolicy = request.app.state.intake_policy
    return policy


def store_of(request: Request) -> ObjectStore:
    store: ObjectStore = request.app.state.store
    return store


def cache_of(request: Request) -> CachePolicy:
    cache: CachePolicy = request.app.state.result_cache
    return cache


def s3_sources_of(request: Request) -> SourcePolicy:
    policy: SourcePolicy = request.app.state.s3_sources
    return policy


def s3_reader_of(request: Request) -> S3Reader:
    """The client that reads tenants' s3:// objects, made on first use."""
    reader: S3Reader | None = getattr(request.app.state, "s3_reader", None)
    if reader is None:
        settings = settings_of(request)
        reader = S3Reader(endpoint_url=settings.s3_endpoint_url, region=settings.s3_region)
        request.app.state.s3_reader = reader
    return reader


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings
