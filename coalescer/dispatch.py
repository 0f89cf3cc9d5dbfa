"""The dispatch port: how a written batch reaches a worker (Celery, or an in-process queue)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from models.queue import release_undelivered

log = logging.getLogger(__name__)


class Dispatcher(Protocol):
    def dispatch(self, batch_id: uuid.UUID, model: str, worker: str | None = None) -> None:
        """Ring the doorbell of `worker`, or of any worker of `model` when None. Losing the
        ring is fine: the sweeper rings again (on the model's shared queue)."""
        ...


def ring(dispatcher: Dispatcher, sessions: sessionmaker[Session],
         doorbells: Sequence[tuple[uuid.UUID, str, str | None]]) -> None:
    """Ring for each (batch, model, worker). A ring that fails (the broker is down or
    restarting) does not stop the others; its batch is marked never sent, so the sweeper
    rings again at its next look instead of after `redispatch_after_seconds`."""
    unsent: list[uuid.UUID] = []
    for batch_id, model, worker in doorbells:
        try:
            dispatcher.dispatch(batch_id, model, worker)
        except Exception:
            log.exception("could not send batch %s to its workers; the sweeper will",
                          batch_id)
            unsent.append(batch_id)
    if not unsent:
        return
    try:
        with sessions() as session:
            release_undelivered(session, unsent)
            session.commit()
    except Exception:  # then the sweeper finds them after redispatch_after_seconds
        log.exception("could not mark %d unsent batches", len(unsent))
