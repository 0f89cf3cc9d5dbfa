"""What route handlers take from the app: sessions, limits, the object store, settings,
the exact result cache's policy, and the caller's tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from api.auth import tenant_for_request
from cache.keys import CachePolicy
from intake.limits import IntakeLimits
from penny.settings import Settings
from storage.port import ObjectStore

Tenant = Annotated[str, Depends(tenant_for_request)]


def sessions_of(request: Request) -> sessionmaker[Session]:
    sessions: sessionmaker[Session] = request.app.state.sessions
    return sessions


def limits_of(request: Request) -> IntakeLimits:
    limits: IntakeLimits = request.app.state.intake_limits
    return limits


def store_of(request: Request) -> ObjectStore:
    store: ObjectStore = request.app.state.store
    return store


def cache_of(request: Request) -> CachePolicy:
    cache: CachePolicy = request.app.state.result_cache
    return cache


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings
