"""Running one batch: claim it, generate, and record everything in one transaction.

This is the whole worker pipeline; the Celery task and the in-process worker thread are
thin shells around `BatchRunner.run`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from ledger.pricing import TokenUsage, price_job, share_engine_seconds
from models.queue import ClaimedBatch, JobOutcome, claim_batch, record_batch, renew_lease
from penny.settings import Settings
from storage.port import ObjectStore
from workers.engine import Engine, Generation, GenerationRequest
from workers.finalize import finalize_ready

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchRun:
    batch_id: uuid.UUID
    claimed: bool
    recorded: bool
    jobs: int = 0


class _LeaseKeeper:
    """Renews the batch lease while the engine works, so a long batch is not mistaken for
    a dead worker. If the process dies, renewals stop and the sweeper takes over."""

    def __init__(self, sessions: sessionmaker[Session], batch: ClaimedBatch, lease: float):
        self._sessions, self._batch, self._lease = sessions, batch, lease
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lease-keeper", daemon=True)

    def __enter__(self) -> _LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self._lease / 3):
            try:
                with self._sessions() as session:
                    if not renew_lease(session, self._batch.id, self._batch.claim_token,
                                       self._lease):
                        log.warning("lost the lease on batch %s", self._batch.id)
                        return
            except Exception:  # the next renewal may succeed; the lease has slack
                log.exception("could not renew the lease on batch %s", self._batch.id)


def outcomes_for(
    batch: ClaimedBatch,
    generations: Sequence[Generation],
    engine_seconds: float,
    settings: Settings,
) -> list[JobOutcome]:
    """Pair each job with its generation, its share of engine time and its price."""
    usages = [TokenUsage(g.prompt_tokens, g.cached_tokens, g.output_tokens) for g in generations]
    ok = [g.ok for g in generations]
    shares = share_engine_seconds(engine_seconds, [u for u, good in zip(usages, ok, strict=True)
                                                   if good])
    share_iter = iter(shares)
    price = settings.price_for(batch.model)
    outcomes = []
    for job, generation, usage in zip(batch.jobs, generations, usages, strict=True):
        if not generation.ok:
            outcomes.append(JobOutcome(job, None, None, {
                "code": generation.error_code, "message": generation.error_message}))
            continue
        seconds = next(share_iter)
        cost = price_job(usage, seconds, price)
        result = {
            "text": generation.text,
            "finish_reason": generation.finish_reason,
            "prompt_tokens": generation.prompt_tokens,
            "cached_tokens": generation.cached_tokens,
            "output_tokens": generation.output_tokens,
            "mean_logprob": generation.mean_logprob,
        }
        ledger = {
            "model": batch.model,
            "input_tokens": generation.prompt_tokens,
            "cached_tokens": generation.cached_tokens,
            "output_tokens": generation.output_tokens,
            "engine_seconds": seconds,
            "cost_usd": cost.cost_usd,
            "list_cost_usd": cost.list_cost_usd,
        }
        outcomes.append(JobOutcome(job, result, ledger, None))
    return outcomes


class BatchRunner:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        engine: Engine,
        store: ObjectStore,
        worker_id: str,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.engine = engine
        self.store = store
        self.worker_id = worker_id

    def run(self, batch_id: uuid.UUID) -> BatchRun:
        with self.sessions() as session:
            batch = claim_batch(session, batch_id, self.worker_id, self.settings.lease_seconds)
        if batch is None:
            log.info("batch %s is not pending; another worker has it or it is done", batch_id)
            return BatchRun(batch_id, claimed=False, recorded=False)
        requests = [
            GenerationRequest.from_stored(str(job.id), job.request, cache_salt=str(job.tenant_id))
            for job in batch.jobs
        ]
        with _LeaseKeeper(self.sessions, batch, self.settings.lease_seconds):
            generated = self.engine.generate(requests)
        outcomes = outcomes_for(batch, generated.generations, generated.engine_seconds,
                                self.settings)
        with self.sessions() as session:
            recorded = record_batch(session, batch, outcomes, generated.engine_seconds)
        if not recorded:
            log.warning("batch %s was taken over while running; its results were dropped",
                        batch_id)
        else:
            finalize_ready(self.sessions, self.store,
                           sorted({job.submission_id for job in batch.jobs}))
        return BatchRun(batch_id, claimed=True, recorded=recorded, jobs=len(batch.jobs))
