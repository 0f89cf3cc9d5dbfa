"""Counting a recorded batch into the worker's metrics, from the rows it wrote."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from models.batch_totals import batch_totals
from observability import metrics

log = logging.getLogger(__name__)


def count_recorded_batch(sessions: sessionmaker[Session], batch_id: uuid.UUID, model: str,
                         engine_seconds: float) -> None:
    """Read back what the batch's transaction wrote (its copies' rows included) and add it
    to the counters. The batch is already recorded: a failure here costs a sample, never
    the batch."""
    try:
        with sessions() as session:
            totals = batch_totals(session, batch_id)
    except SQLAlchemyError:
        log.warning("batch %s: could not read its totals for the metrics", batch_id,
                    exc_info=True, extra={"batch_id": str(batch_id)})
        return
    metrics.record_batch(model, engine_seconds, totals)
    log.info("batch %s recorded: %s, %d output tokens in %.2f engine seconds", batch_id,
             ", ".join(f"{n} {status}" for status, n in sorted(totals.finished.items())),
             totals.engine_output_tokens, engine_seconds,
             extra={"batch_id": str(batch_id), "model": model})
