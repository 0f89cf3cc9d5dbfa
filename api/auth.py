"""Who is calling: API key -> tenant, resolved once per key per process and cached.

Keys come as `Authorization: Bearer <key>` or `x-api-key` (the Anthropic SDK), never in a
URL. A key is looked up by its SHA-256 (`tenancy.keys`): a bootstrap key from
PENNY_API_KEYS is a dictionary hit, a key made with `penny keys` one indexed statement
that also touches its last_used_at. What was learned is trusted for
PENNY_KEY_CACHE_SECONDS, so a revoked key stops working within that time and the auth
path costs a cache hit almost always. A key that is not valid is never cached: nothing an
unknown caller sends can fill the cache.

With no key anywhere (no bootstrap key, no key ever made) there is no auth and every
request belongs to the "default" tenant; penny then refuses to listen beyond loopback
unless told to (`penny.serve`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from fastapi import Request
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from models.tenants import TenantRef, any_key_exists, ensure_tenant, resolve_key
from penny.errors import Unauthorized
from penny.settings import Settings
from tenancy.keys import AdminKeys, hash_key

DEFAULT_TENANT = "default"
# Past this many cached keys the cache starts over: it is a cache, not a registry.
_MAX_CACHED_KEYS = 10_000


@dataclass(frozen=True)
class _Cached:
    tenant: TenantRef
    until: float


def presented_key(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        key = request.headers.get("x-api-key", "")
    return key.strip()


class TenantResolver:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._ttl = settings.key_cache_seconds
        self._bootstrap = {hash_key(key): name for key, name in settings.api_keys.items()}
        self._keys: dict[str, _Cached] = {}
        self._named: dict[str, TenantRef] = {}
        # Auth switches on once a key exists and never off again in this process.
        self._required = bool(self._bootstrap)
        self._open_checked_at = float("-inf")
        self._lock = threading.Lock()

    def known(self, key: str) -> TenantRef | None:
        """The caller's tenant if this process already knows it (no I/O at all), else
        None: then `tenant_for_key` asks the database."""
        if not self._required:
            if time.monotonic() - self._open_checked_at >= self._ttl:
                return None  # whether auth is on must be asked again
            return self._named.get(DEFAULT_TENANT)
        if not key:
            return None
        cached = self._keys.get(hash_key(key))
        if cached is not None and cached.until > time.monotonic():
            return cached.tenant
        return None

    def auth_required(self) -> bool:
        if self._required:
            return True
        now = time.monotonic()
        if now - self._open_checked_at >= self._ttl:
            with self._sessions() as session:
                self._required = any_key_exists(session)
            self._open_checked_at = now
        return self._required

    def named(self, name: str) -> TenantRef:
        """A configured tenant (a bootstrap key's, or the no-auth default), created at its
        first use in this process and remembered after."""
        tenant = self._named.get(name)
        if tenant is None:
            with self._sessions() as session:
                tenant = ensure_tenant(session, name)
                session.commit()
            self._named[name] = tenant
        return tenant

    def for_key(self, key: str) -> TenantRef | None:
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._keys.get(digest)
        if cached is not None and cached.until > now:
            return cached.tenant
        name = self._bootstrap.get(digest)
        if name is not None:
            tenant: TenantRef | None = self.named(name)
        else:
            with self._sessions() as session:
                tenant = resolve_key(session, digest)
                session.commit()
        if tenant is None:
            self._keys.pop(digest, None)
            return None
        with self._lock:
            if len(self._keys) >= _MAX_CACHED_KEYS:
                self._keys.clear()
            self._keys[digest] = _Cached(tenant, now + self._ttl)
        return tenant


async def tenant_for_request(request: Request) -> TenantRef:
    """The caller's tenant: a cache hit on the event loop almost always; a lookup (or the
    first use of a configured tenant) in the thread pool, off the loop."""
    resolver: TenantResolver = request.app.state.tenants
    tenant = resolver.known(presented_key(request))
    if tenant is not None:
        return tenant
    return await run_in_threadpool(tenant_for_key, resolver, presented_key(request))


def tenant_for_key(resolver: TenantResolver, key: str) -> TenantRef:
    if not resolver.auth_required():
        return resolver.named(DEFAULT_TENANT)
    if not key:
        raise Unauthorized("send your API key as 'Authorization: Bearer <key>' or 'x-api-key'")
    tenant = resolver.for_key(key)
    if tenant is None:
        raise Unauthorized("the API key is not valid")
    return tenant


def require_admin(request: Request) -> None:
    admin_keys: AdminKeys = request.app.state.admin_keys
    if not admin_keys:
        raise Unauthorized("the admin API is off: set PENNY_ADMIN_API_KEYS to use it")
    key = presented_key(request)
    if not key or not admin_keys.matches(key):
        raise Unauthorized("an admin key is required: send it as 'Authorization: Bearer "
                           "<key>' or 'x-api-key'")
