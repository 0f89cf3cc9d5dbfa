"""Liveness and readiness.

`/healthz` says the process answers HTTP and nothing more: an orchestrator restarts a
process that fails it, so it must not fail because Postgres is down (restarting the API
would not bring the database back). `/readyz` says whether work sent now will be done:
the database answers, the broker answers when there is one, and every served model has a
live worker. A load balancer stops sending traffic while it fails.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from models.workers import live_workers
from penny.settings import Settings

router = APIRouter(tags=["health"])

# Long enough for a healthy server on a busy machine, short enough for a probe's timeout.
BROKER_TIMEOUT_SECONDS = 2.0


class Readiness(BaseModel):
    status: str  # "ready" or "unavailable"
    checks: dict[str, str]  # check -> "ok" or what is wrong


class WorkerPresence(Protocol):
    """Which served models have a worker able to run their batches right now."""

    def live_models(self) -> Collection[str]: ...


class HeartbeatPresence:
    """Distributed mode: workers heartbeat into Postgres (`workers` table); one heard
    from within three heartbeat intervals counts, as it does for the coalescer's routing."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self._sessions = sessions
        self._stale_after = settings.worker_heartbeat_seconds * 3

    def live_models(self) -> Collection[str]:
        with self._sessions() as session:
            return set(live_workers(session, self._stale_after))


def _check_database(sessions: sessionmaker[Session]) -> str:
    try:
        with sessions() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError as error:
        return f"unreachable: {str(error).splitlines()[0][:200]}"
    return "ok"


def _check_broker(redis_url: str) -> str:
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=BROKER_TIMEOUT_SECONDS,
                                  socket_connect_timeout=BROKER_TIMEOUT_SECONDS)
    try:
        client.ping()
    except redis.RedisError as error:
        return f"unreachable: {str(error)[:200]}"
    finally:
        client.close()
    return "ok"


def _check_workers(presence: WorkerPresence, models: list[str]) -> str:
    try:
        live = presence.live_models()
    except SQLAlchemyError:  # the database check names the cause
        return "unknown: the database did not answer"
    missing = [model for model in models if model not in live]
    if missing:
        return "no live worker for " + ", ".join(missing)
    return "ok"


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={
    200: {"model": Readiness, "description": "Every check is ok"},
    503: {"model": Readiness, "description": "A check failed; it says why"}})
def readyz(request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    presence: WorkerPresence = request.app.state.worker_presence
    checks = {"database": _check_database(request.app.state.sessions)}
    if settings.redis_url:
        checks["broker"] = _check_broker(settings.redis_url)
    checks["workers"] = _check_workers(presence, settings.served_models)
    ready = all(result == "ok" for result in checks.values())
    return JSONResponse({"status": "ready" if ready else "unavailable", "checks": checks},
                        status_code=200 if ready else 503)
