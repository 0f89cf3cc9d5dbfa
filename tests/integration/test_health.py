"""Liveness and readiness over HTTP: `penny api --host --port` in a process of its own,
and /readyz naming each check it makes against real Postgres, Redis and workers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from models.workers import heartbeat, remove_worker
from penny.runtime import Runtime, open_runtime
from tests.support import (
    PennyProcess,
    free_port,
    make_settings,
    penny_env,
    reset_tables,
    wait_for_http,
)
from workers.inprocess import InProcessPipeline


@pytest.fixture
def api_process(runtime: Runtime, redis_url: str, tmp_path: Path) -> Iterator[str]:
    """`penny api` on a port of our choosing, in distributed mode (Redis set)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with PennyProcess(["api", "--host", "127.0.0.1", "--port", str(port)],
                      penny_env(runtime.settings, PENNY_REDIS_URL=redis_url),
                      tmp_path / "api.log") as api:
        wait_for_http(api, f"{url}/healthz")
        yield url


def test_api_command_serves_on_the_given_port_and_is_ready_once_every_model_has_a_worker(
    api_process: str, runtime: Runtime
) -> None:
    assert httpx.get(f"{api_process}/healthz").json() == {"status": "ok"}
    # The API reference a new team reads: interactive at /docs, the schema beside it.
    reference = httpx.get(f"{api_process}/docs")
    assert reference.status_code == 200 and "/openapi.json" in reference.text
    paths = httpx.get(f"{api_process}/openapi.json").json()["paths"]
    assert {"/v1/jobs", "/v1/uploads/csv", "/v1/batches", "/readyz"} <= set(paths)

    models = runtime.settings.served_models
    not_ready = httpx.get(f"{api_process}/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "broker": "ok",
                   "workers": "no live worker for " + ", ".join(models)},
    }

    with runtime.sessions() as session:
        heartbeat(session, "box-1-chat", models[0])
    partly = httpx.get(f"{api_process}/readyz")
    assert partly.status_code == 503
    assert partly.json()["checks"]["workers"] == "no live worker for " + ", ".join(models[1:])

    with runtime.sessions() as session:
        for i, model in enumerate(models[1:]):
            heartbeat(session, f"box-2-{i}", model)
    ready = httpx.get(f"{api_process}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready",
                            "checks": {"database": "ok", "broker": "ok", "workers": "ok"}}

    with runtime.sessions() as session:
        remove_worker(session, "box-1-chat")
    assert httpx.get(f"{api_process}/readyz").status_code == 503


def test_readyz_names_an_unreachable_broker(runtime: Runtime, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, runtime.settings.database_url or "",
                             redis_url=f"redis://127.0.0.1:{free_port()}/0")
    broker_down = open_runtime(settings)
    try:
        with TestClient(create_app(broker_down)) as client:
            response = client.get("/readyz")
    finally:
        broker_down.close()
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == "ok"
    assert checks["broker"].startswith("unreachable: "), checks


def test_healthz_stays_up_while_readyz_names_an_unreachable_database(
    runtime: Runtime, tmp_path: Path
) -> None:
    dead = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere"
    settings = make_settings(tmp_path, dead)
    from penny.database import make_engine, make_sessionmaker

    db = make_engine(dead)
    broken = Runtime(settings=settings, database_url=dead, db=db,
                     sessions=make_sessionmaker(db), store=runtime.store)
    with TestClient(create_app(broken)) as client:
        alive = client.get("/healthz")
        ready = client.get("/readyz")
    db.dispose()
    assert alive.status_code == 200
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["database"].startswith("unreachable: "), checks
    assert checks["workers"] == "unknown: the database did not answer"
    assert "broker" not in checks  # embedded-style settings: no broker to check


def test_embedded_readiness_follows_the_in_process_workers(
    tmp_path: Path, database_url: str, embedder: object
) -> None:
    """`penny up` has no heartbeats: ready while its in-process worker threads run."""
    settings = make_settings(tmp_path, database_url, models={})
    runtime = open_runtime(settings)
    reset_tables(runtime)
    try:
        pipeline = InProcessPipeline(runtime, [], [embedder])  # type: ignore[list-item]
        client = TestClient(create_app(runtime, pipeline))
        before = client.get("/readyz")
        with pipeline:
            during = client.get("/readyz")
        after = client.get("/readyz")
    finally:
        runtime.close()
    assert before.status_code == 503
    assert before.json()["checks"]["workers"] == "no live worker for all-MiniLM-L6-v2"
    assert during.status_code == 200, during.json()
    assert during.json() == {"status": "ready", "checks": {"database": "ok", "workers": "ok"}}
    assert after.status_code == 503
