"""What route handlers take from the app: sessions, limits, the object store, settings,
the exact result cache's policy, and the caller's tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session, sessionmaker

from api.auth import require_admin, tenant_for_request
from cache.keys import CachePolicy
from intake.admission import IntakePolicy
from intake.limits import IntakeLimits
from models.tenants import TenantRef
from penny.settings import Settings
from storage.port import ObjectStore

Tenant = Annotated[TenantRef, Depends(tenant_for_request)]
Admin = Annotated[None, Depends(require_admin)]
# Every create endpoint takes one; a key is scoped to the tenant.
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
]


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


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings
