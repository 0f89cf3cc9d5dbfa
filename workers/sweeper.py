"""The sweeper: re-dispatches work whose lease ran out or whose task message was lost,
fails work that ran out of attempts, expires batches whose completion window ran out,
removes expired files, forgets idempotency keys past their window, and finalizes
submissions that were missed. Less often it expires and evicts exact result cache
entries."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from coalescer.dispatch import Dispatcher, ring
from models.batches import expire_overdue_batches
from models.files import take_expired_files
from models.queue import sweep_expired_leases
from models.result_cache import sweep_result_cache
from models.semantic_cache import sweep_semantic_cache
from models.submissions import forget_expired_idempotency_keys
from observability import metrics
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
    metrics.record_sweep([model for _, model in result.requeued], len(result.failed))
    for batch_id, model in result.requeued:
        log.warning("re-dispatching batch %s", batch_id,
                    extra={"batch_id": str(batch_id), "model": model})
    ring(dispatcher, sessions, [(batch_id, model, None) for batch_id, model in result.requeued])
    for batch_id in result.failed:
        log.error("batch %s failed: out of attempts", batch_id,
                  extra={"batch_id": str(batch_id)})
    with sessions() as session:
        for submission_id in expire_overdue_batches(session):
            log.info("batch submission %s expired: its completion window ran out",
                     submission_id, extra={"submission_id": str(submission_id)})
        expired_files = take_expired_files(session)
        forget_expired_idempotency_keys(session, datetime.now(UTC) - timedelta(
            seconds=settings.idempotency_window_seconds))
        session.commit()  # rows first: a crash now leaves an orphan object, never a dead row
    for _, object_key in expired_files:
        store.delete(object_key)
    finalize_ready(sessions, store)


def sweep_result_cache_entries(settings: Settings, sessions: sessionmaker[Session]) -> None:
    """Drop expired entries and each tenant's least recently used beyond the maximum."""
    with sessions() as session:
        swept = sweep_result_cache(session, settings.result_cache_max_entries)
        # Semantic entries expire on the same schedule (a no-op without pgvector).
        semantic = sweep_semantic_cache(session)
        session.commit()
    if swept.expired or swept.evicted:
        log.info("result cache: %d entries expired, %d evicted", swept.expired, swept.evicted)
    if semantic:
        log.info("semantic cache: %d entries expired", semantic)
