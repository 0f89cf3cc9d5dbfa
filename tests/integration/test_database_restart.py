"""A Postgres restart in the middle of the claim path, on a real server of the test's own:
the claim waits the restart out on fresh connections instead of failing or wedging; a
database that stays away fails the claim once the retry window is spent; and an error that
is not about the connection is never retried."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from api.app import create_app
from coalescer.runner import Coalescer
from models.queue import claim_batch
from models.retrying import with_retries
from models.status import BatchStatus
from models.tables import Batch, Tenant, Worker
from penny.runtime import Runtime, open_runtime
from tests.services import PrivatePostgres
from tests.support import make_settings
from workers.presence import Presence


class Doorbells:
    def __init__(self) -> None:
        self.rung: list[uuid.UUID] = []

    def dispatch(self, batch_id: uuid.UUID, model: str, worker: str | None = None) -> None:
        self.rung.append(batch_id)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    with PrivatePostgres() as server:
        yield server


@pytest.fixture
def private_runtime(tmp_path: Path, postgres: PrivatePostgres) -> Iterator[Runtime]:
    url = postgres.create_database(f"penny_{uuid.uuid4().hex[:10]}")
    runtime = open_runtime(make_settings(tmp_path, url, database_retry_seconds=60.0))
    yield runtime
    runtime.close()


def _pending_batch(runtime: Runtime) -> uuid.UUID:
    client = TestClient(create_app(runtime))
    assert client.post("/v1/jobs", json={"prompt": "Say hi.", "max_tokens": 2}).status_code == 202
    doorbells = Doorbells()
    coalescer = Coalescer(runtime.settings, runtime.sessions, doorbells, runtime.store,
                          list(runtime.settings.models))
    for _ in range(50):
        if coalescer.tick():
            break
    (batch_id,) = doorbells.rung
    return batch_id


def test_a_claim_rides_out_a_postgres_crash_and_restart(
    private_runtime: Runtime, postgres: PrivatePostgres
) -> None:
    runtime = private_runtime
    batch_id = _pending_batch(runtime)
    # Every pooled connection now points at a server that is about to vanish.
    postgres.stop("immediate")
    restarted = threading.Event()

    def pause(seconds: float) -> None:
        # The first pause is when the server comes back: the next try must find it.
        if not restarted.is_set():
            postgres.start()
            restarted.set()

    claimed = with_retries(
        runtime.sessions,
        lambda session: claim_batch(session, batch_id, "worker-a", 30.0),
        within_seconds=60.0, what="claiming", sleep=pause)
    assert restarted.is_set()  # the first try failed on the dead server
    assert claimed is not None and claimed.id == batch_id and len(claimed.jobs) == 1
    with runtime.sessions() as session:
        status, worker = session.execute(
            select(Batch.status, Batch.worker_id).where(Batch.id == batch_id)).one()
    assert (status, worker) == (BatchStatus.RUNNING, "worker-a")


def test_a_database_that_stays_away_fails_the_claim_when_the_window_is_spent(
    private_runtime: Runtime, postgres: PrivatePostgres
) -> None:
    runtime = private_runtime
    batch_id = _pending_batch(runtime)
    postgres.stop("immediate")
    pauses: list[float] = []
    try:
        with pytest.raises(OperationalError):
            with_retries(runtime.sessions,
                         lambda session: claim_batch(session, batch_id, "worker-a", 30.0),
                         within_seconds=1.0, what="claiming", sleep=pauses.append)
    finally:
        postgres.start()
    assert pauses  # it did try again before giving up
    with runtime.sessions() as session:  # and the pool works again once the server is back
        assert session.execute(select(Batch.status).where(Batch.id == batch_id)
                               ).scalar_one() == BatchStatus.PENDING


def test_an_error_about_the_statement_is_not_retried(private_runtime: Runtime) -> None:
    tries: list[int] = []

    def duplicate_tenant(session: Session) -> None:
        tries.append(1)
        tenant = {"id": uuid.uuid4(), "name": f"t-{uuid.uuid4().hex[:6]}"}
        session.execute(insert(Tenant).values(**tenant))
        session.execute(insert(Tenant).values(**tenant))

    with pytest.raises(IntegrityError):
        with_retries(private_runtime.sessions, duplicate_tenant, within_seconds=60.0,
                     what="inserting", sleep=lambda _: None)
    assert tries == [1]


def test_a_worker_that_says_hello_while_postgres_restarts_waits_for_it(
    private_runtime: Runtime, postgres: PrivatePostgres
) -> None:
    """A worker's first heartbeat comes after its engine loaded: a Postgres crash in
    between is waited out, not the end of the worker."""
    postgres.stop("immediate")
    restarter = threading.Timer(1.0, postgres.start)
    restarter.start()
    try:
        with (Presence(private_runtime.sessions, "worker-hello", "some-model",
                       interval_seconds=3600, retry_seconds=60.0),
              private_runtime.sessions() as session):
            assert session.execute(select(Worker.model).where(
                Worker.id == "worker-hello")).scalar_one() == "some-model"
    finally:
        restarter.join()
