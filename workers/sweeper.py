"""The sweeper: re-dispatches work whose lease ran out or whose task message was lost,
fails work that ran out of attempts, and finalizes submissions that were missed."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session, sessionmaker

from coalescer.dispatch import Dispatcher
from models.queue import sweep_expired_leases
from penny.settings import Settings
from storage.port import ObjectStore
from workers.finalize import finalize_ready

log = logging.getLogger(__name__)


def sweep(
    settings: Settings,
    sessions: sessionmaker[Session],
    dispatcher: Dispatcher,
    store: ObjectStore,
) -> None:
    with sessions() as session:
        result = sweep_expired_leases(
            session, settings.max_attempts, settings.redispatch_after_seconds
        )
    for batch_id, model in result.requeued:
        log.warning("re-dispatching batch %s", batch_id)
        dispatcher.dispatch(batch_id, model)
    for batch_id in result.failed:
        log.error("batch %s failed: out of attempts", batch_id)
    finalize_ready(sessions, store)
