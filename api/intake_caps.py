"""What intake adds to a tenant's jobs from outside their bodies: the max_tokens caps of
their features (read from Postgres at most once per PENNY_REPORT_CAPS_CACHE_SECONDS per
tenant and process) and the client SDK's retry count header."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import replace

from fastapi import Request
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from intake.max_tokens_caps import JobCaps, apply_caps
from models.max_tokens_caps import caps_of
from models.submissions import NewJob
from penny.settings import Settings

RETRY_COUNT_HEADER = "x-stainless-retry-count"  # sent by the openai and anthropic SDKs
_MAX_RETRY_COUNT = 1_000_000


class CapsCache:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._ttl = settings.report_caps_cache_seconds
        self.feature_tag = settings.report_feature_tag
        self._caps: dict[uuid.UUID, tuple[float, dict[str, int]]] = {}
        self._lock = threading.Lock()

    def known(self, tenant_id: uuid.UUID) -> dict[str, int] | None:
        """The tenant's caps if this process read them recently (no I/O), else None."""
        entry = self._caps.get(tenant_id)
        if entry is not None and time.monotonic() - entry[0] < self._ttl:
            return entry[1]
        return None

    def caps(self, tenant_id: uuid.UUID) -> dict[str, int]:
        known = self.known(tenant_id)
        if known is not None:
            return known
        with self._sessions() as session:
            caps = caps_of(session, tenant_id)
        with self._lock:
            self._caps[tenant_id] = (time.monotonic(), caps)
        return caps

    def of(self, tenant_id: uuid.UUID) -> JobCaps:
        """The tenant's caps to apply to a submission or file (may read the database)."""
        return JobCaps(self.caps(tenant_id), self.feature_tag)

    def forget(self, tenant_id: uuid.UUID) -> None:
        """A cap of the tenant changed through this process: read them again next time."""
        with self._lock:
            self._caps.pop(tenant_id, None)


def caps_for(request: Request, tenant_id: uuid.UUID) -> JobCaps:
    """The tenant's max_tokens caps for the whole of one submission or file. May read the
    database: call it off the event loop."""
    cache: CapsCache = request.app.state.max_tokens_caps
    return cache.of(tenant_id)


def client_retry_count(request: Request) -> int | None:
    """The SDK's retry count header as a number; None when absent or not a count."""
    raw = request.headers.get(RETRY_COUNT_HEADER, "").strip()
    if not raw.isdigit() or len(raw) > 7:
        return None
    return min(int(raw), _MAX_RETRY_COUNT)


def _with_retry_count(jobs: list[NewJob], request: Request) -> list[NewJob]:
    count = client_retry_count(request)
    if count is None:
        return jobs
    return [replace(job, client_retry_count=count) for job in jobs]


def prepared_jobs(request: Request, tenant_id: uuid.UUID, jobs: list[NewJob]
                  ) -> list[NewJob]:
    """`jobs` with the tenant's caps applied and the retry header recorded. May read the
    database: call it off the event loop (or use `prepared_jobs_async`)."""
    cache: CapsCache = request.app.state.max_tokens_caps
    return apply_caps(_with_retry_count(jobs, request), cache.caps(tenant_id),
                      cache.feature_tag)


async def prepared_jobs_async(request: Request, tenant_id: uuid.UUID, jobs: list[NewJob]
                              ) -> list[NewJob]:
    cache: CapsCache = request.app.state.max_tokens_caps
    caps = cache.known(tenant_id)
    if caps is None:
        caps = await run_in_threadpool(cache.caps, tenant_id)
    return apply_caps(_with_retry_count(jobs, request), caps, cache.feature_tag)
