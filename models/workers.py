"""Worker presence: who is alive to take batches, and how loaded each one is."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models.status import BatchStatus
from models.tables import Batch, Worker


def heartbeat(session: Session, worker_id: str, model: str) -> None:
    session.execute(
        insert(Worker)
        .values(id=worker_id, model=model)
        .on_conflict_do_update(index_elements=[Worker.id], set_={"heartbeat_at": func.now()})
    )
    session.commit()


def remove_worker(session: Session, worker_id: str) -> None:
    session.execute(delete(Worker).where(Worker.id == worker_id))
    session.commit()


def live_workers(session: Session, stale_after_seconds: float) -> dict[str, list[str]]:
    """Model -> ids of workers heard from recently, in a stable order."""
    rows = session.execute(
        select(Worker.model, Worker.id)
        .where(Worker.heartbeat_at > func.now() - timedelta(seconds=stale_after_seconds))
        .order_by(Worker.model, Worker.id)
    )
    live: dict[str, list[str]] = {}
    for model, worker_id in rows:
        live.setdefault(model, []).append(worker_id)
    return live


def worker_loads(session: Session, model: str) -> dict[str, int]:
    """Batches each worker holds or is about to: running ones it claimed, pending ones
    routed to it."""
    holder = func.coalesce(Batch.worker_id, Batch.target_worker)
    rows = session.execute(
        select(holder, func.count())
        .where(Batch.model == model,
               Batch.status.in_([BatchStatus.PENDING, BatchStatus.RUNNING]),
               holder.is_not(None))
        .group_by(holder)
    )
    return {str(worker): int(count) for worker, count in rows}
