"""A doorbell that cannot be rung (the broker is down or restarting) loses nothing and
waits for nothing: the batch is marked never sent, and the next sweep rings it at once
rather than after `redispatch_after_seconds`."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from coalescer.runner import Coalescer
from models.tables import Batch
from penny.runtime import Runtime
from workers.sweeper import sweep


class Broker:
    def __init__(self) -> None:
        self.down = True
        self.rung: list[uuid.UUID] = []

    def dispatch(self, batch_id: uuid.UUID, model: str, worker: str | None = None) -> None:
        if self.down:
            raise ConnectionError("Connection refused (injected)")
        self.rung.append(batch_id)


def test_an_unsent_batch_is_rung_again_at_the_next_sweep(runtime: Runtime) -> None:
    settings = runtime.settings.model_copy(update={"redispatch_after_seconds": 3600.0})
    client = TestClient(create_app(runtime))
    assert client.post("/v1/jobs", json={"prompt": "Say hi.", "max_tokens": 2}
                       ).status_code == 202
    broker = Broker()
    coalescer = Coalescer(settings, runtime.sessions, broker, runtime.store,
                          list(settings.models))
    coalescer._last_sweep = float("inf")  # this test sweeps by hand
    for _ in range(50):
        if coalescer.tick():
            break
    with runtime.sessions() as session:
        batch_id, dispatched_at = session.execute(select(Batch.id, Batch.dispatched_at)
                                                  ).one()
    assert dispatched_at is None  # written, not sent, and marked so
    assert broker.rung == []

    broker.down = False
    sweep(settings, runtime.sessions, broker, runtime.store)
    assert broker.rung == [batch_id]  # at once, not an hour later
    sweep(settings, runtime.sessions, broker, runtime.store)
    assert broker.rung == [batch_id]  # and once
