"""Running one batch: claim it, run it on the model, and record everything in one
transaction.

This is the whole worker pipeline; the Celery task and the in-process worker thread are
thin shells around `BatchRunner.run`. What "run it on the model" means is the executor's
business: generation on an `Engine` here, embeddings in `workers.embedding_execution`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from cache.model_identity import cache_policy
from coalescer.dispatch import Dispatcher, ring
from ledger.attribution import unmodelled
from ledger.pricing import TokenUsage, price_job, share_engine_seconds
from models.failover import Failover, fail_over, hand_back
from models.queue import (
    ClaimedBatch,
    JobOutcome,
    claim_batch,
    record_batch,
    release_undelivered,
    renew_lease,
)
from models.retrying import is_connection_failure, with_retries
from models.trace_context import traceparents_of_submissions
from observability import tracing
from observability.logs import logs_about_batch
from penny.settings import Settings
from routing.router import route_label
from storage.port import ObjectStore
from workers.batch_metrics import count_recorded_batch
from workers.cascade import judge_cascade
from workers.engine import Engine, Generation, GenerationRequest, Sampling
from workers.finalize import finalize_ready
from workers.ledger_costing import LedgerCosting

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class BatchRun:
    batch_id: uuid.UUID
    claimed: bool
    recorded: bool
    jobs: int = 0
    # The engine raised: the batch was split (or its lone job retried or failed).
    failed_over: bool = False
    # Handed to a recorder: its results are written while the engine runs the next batch.
    recording: bool = False


class _LeaseKeeper:
    """Renews the batch lease while the engine works, so a long batch is not mistaken for
    a dead worker. If the process dies, renewals stop and the sweeper takes over."""

    def __init__(self, sessions: sessionmaker[Session], batch: ClaimedBatch, lease: float):
        self._sessions, self._batch, self._lease = sessions, batch, lease
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lease-keeper", daemon=True)

    def start(self) -> _LeaseKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
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


@dataclass(frozen=True)
class JobProduct:
    """What the model made for one job: its result row and token usage, or an error."""

    usage: TokenUsage
    result: dict[str, Any] | None
    error: dict[str, Any] | None = None
    # An error that came after the engine worked on the job: `usage` is what it computed,
    # and the job is billed for it.
    ran: bool = False

    @property
    def billable(self) -> bool:
        return self.result is not None or self.ran


# A ledger row's `outcome`: what the job it bills came to.
SUCCEEDED = "succeeded"
FAILED = "failed"


@dataclass(frozen=True)
class ExecutedBatch:
    outcomes: list[JobOutcome]
    engine_seconds: float
    # Bookkeeping written in the batch's own recording transaction (filling the semantic
    # cache with the fresh answers): a finished job's entry is there as soon as it is.
    record_with: Callable[[Session], None] | None = None


class BatchExecutor(Protocol):
    """Runs a claimed batch's jobs on one model."""

    @property
    def model_name(self) -> str: ...

    def execute(self, batch: ClaimedBatch) -> ExecutedBatch:
        """Never raise for one bad job: it becomes that job's error outcome."""
        ...

    def still_works(self) -> bool:
        """Whether the model answers a one-token canary: asked after `execute` raised, to
        tell a batch that breaks the model from a model that is broken."""
        ...


class EngineBroken(RuntimeError):
    """The worker's model fails even a canary: the batch went back to other workers, and
    this worker must stop taking work (a fresh process gets a fresh engine)."""


def priced_outcomes(
    batch: ClaimedBatch,
    products: Sequence[JobProduct],
    engine_seconds: float,
    settings: Settings,
) -> list[JobOutcome]:
    """Pair each job with its product, its share of engine time and its price. A job that
    failed after the engine worked on it pays its share like the rest (its ledger row's
    outcome says `failed`); one that failed before the engine bills nothing. The seconds
    of earlier calls that raised on these jobs (`batch.failover_seconds`) are shared
    equally by the billed jobs and shown as their `saving_failover_usd` (minus what they
    cost)."""
    shares = iter(share_engine_seconds(engine_seconds, [p.usage for p in products
                                                        if p.billable]))
    billed = sum(1 for p in products if p.billable)
    failover_share = batch.failover_seconds / billed if billed else 0.0
    price = settings.price_for(batch.model)
    outcomes = []
    for job, product in zip(batch.jobs, products, strict=True):
        if not product.billable:
            outcomes.append(JobOutcome(job, None, None, product.error))
            continue
        seconds = next(shares)
        cost = price_job(product.usage, seconds + failover_share, price)
        failover_usd = cost.cost_usd - price_job(product.usage, seconds, price).cost_usd
        ledger = {
            "model": batch.model,
            "input_tokens": product.usage.prompt_tokens,
            "cached_tokens": product.usage.cached_tokens,
            "output_tokens": product.usage.output_tokens,
            # This call's share; the failed calls' seconds are in cost_usd, shown apart.
            "engine_seconds": seconds,
            "cost_usd": cost.cost_usd,
            "list_cost_usd": cost.list_cost_usd,
            # No saving claimed until the ledger costing models one (workers.ledger_costing).
            **unmodelled(cost.cost_usd, failover_usd).columns(),
            "route": route_label(job.route),
            "outcome": SUCCEEDED if product.result is not None else FAILED,
        }
        outcomes.append(JobOutcome(job, product.result, ledger,
                                   None if product.result is not None else product.error))
    return outcomes


def _generation_product(generation: Generation) -> JobProduct:
    usage = TokenUsage(generation.prompt_tokens, generation.cached_tokens,
                       generation.output_tokens)
    if not generation.ok:
        return JobProduct(usage, None, {"code": generation.error_code,
                                        "message": generation.error_message},
                          ran=generation.ran)
    return JobProduct(usage, {
        "text": generation.text,
        "finish_reason": generation.finish_reason,
        "prompt_tokens": generation.prompt_tokens,
        "cached_tokens": generation.cached_tokens,
        "output_tokens": generation.output_tokens,
        "mean_logprob": generation.mean_logprob,
        "token_logprobs": (list(generation.token_logprobs)
                           if generation.token_logprobs is not None else None),
        "choices": [s.stored() for s in generation.samples] or None,
    })


def outcomes_for(
    batch: ClaimedBatch,
    generations: Sequence[Generation],
    engine_seconds: float,
    settings: Settings,
) -> list[JobOutcome]:
    """Pair each job with its generation, its share of engine time and its price."""
    return priced_outcomes(batch, [_generation_product(g) for g in generations],
                           engine_seconds, settings)


class GenerationExecutor:
    """Chat and completions jobs on a text-generation engine."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine, self.settings = engine, settings

    @property
    def model_name(self) -> str:
        return self.engine.model_name

    def execute(self, batch: ClaimedBatch) -> ExecutedBatch:
        requests = [
            GenerationRequest.from_stored(str(job.id), job.request,
                                          cache_salt=str(job.tenant_id))
            for job in batch.jobs
        ]
        generated = self.engine.generate(requests)
        outcomes = outcomes_for(batch, generated.generations, generated.engine_seconds,
                                self.settings)
        return ExecutedBatch(
            judge_cascade(batch.model, outcomes, generated.generations, self.settings),
            generated.engine_seconds)

    def still_works(self) -> bool:
        try:
            self.engine.generate([GenerationRequest(key="canary", prompt="Hi",
                                                    sampling=Sampling(max_tokens=1))])
        except Exception:
            log.exception("the engine fails a one-token canary too")
            return False
        return True


class Recorder(Protocol):
    """Records executed batches later, off the engine's thread (`workers.recorder`)."""

    def submit(self, record: Callable[[], object]) -> None: ...


class BatchListener(Protocol):
    """Told when this worker takes a batch and when it is done with it (recorded, dropped
    or failed): the in-process coalescer sleeps through a running batch instead of polling."""

    def batch_started(self) -> None: ...

    def batch_finished(self) -> None: ...


class BatchRunner:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        executor: BatchExecutor,
        store: ObjectStore,
        worker_id: str,
        listener: BatchListener | None = None,
        dispatcher: Dispatcher | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.executor = executor
        self.store = store
        self.worker_id = worker_id
        # Its model's identity as this worker loaded it: the cache entries it fills say
        # which weights made the answer.
        self.cache = cache_policy(settings, [executor.model_name])
        self.listener = listener
        # Where the halves of a batch whose engine raised are sent; without one the
        # sweeper sends them at its next look.
        self.dispatcher = dispatcher
        self.costing = LedgerCosting(settings, sessions)
        # Where executed batches are recorded while the engine runs the next one; without
        # one (or with tracing on, whose worker span covers the recording) right here.
        self.recorder = recorder

    @logs_about_batch
    def run(self, batch_id: uuid.UUID) -> BatchRun:
        batch = self._retrying(
            lambda session: claim_batch(session, batch_id, self.worker_id,
                                        self.settings.lease_seconds),
            f"claiming batch {batch_id}")
        if batch is None:
            log.info("batch %s is not pending; another worker has it or it is done", batch_id)
            return BatchRun(batch_id, claimed=False, recorded=False)
        if self.listener is not None:
            self.listener.batch_started()
        try:
            return self._run_claimed(batch)
        finally:
            if self.listener is not None:
                self.listener.batch_finished()

    def _run_claimed(self, batch: ClaimedBatch) -> BatchRun:
        with tracing.worker_span(str(batch.id), batch.model, batch.traceparent,
                                 self._submission_traceparents(batch)):
            return self._run_traced(batch)

    def _submission_traceparents(self, batch: ClaimedBatch) -> list[str]:
        """The intake requests the batch's jobs came from, for the worker span's links;
        not asked with tracing off. A trace is not worth failing a batch for."""
        if not tracing.enabled():
            return []
        try:
            with self.sessions() as session:
                return traceparents_of_submissions(
                    session, {job.submission_id for job in batch.jobs})
        except Exception:
            log.exception("could not read the trace contexts of batch %s", batch.id)
            return []

    def _run_traced(self, batch: ClaimedBatch) -> BatchRun:
        batch_id = batch.id
        started = time.perf_counter()
        keeper = _LeaseKeeper(self.sessions, batch, self.settings.lease_seconds).start()
        try:
            executed = self.executor.execute(batch)
        except BaseException as error:  # the engine broke on something in this batch, or broke
            keeper.stop()
            if not isinstance(error, Exception):  # interrupted: the sweeper takes over
                raise
            # What the raising call ran: real seconds, billed with the jobs later.
            failed_seconds = time.perf_counter() - started
            log.exception("the engine raised on batch %s (%d jobs)", batch_id,
                          len(batch.jobs))
            if isinstance(error, DBAPIError) and is_connection_failure(error):
                raise  # the database, not the batch (an executor that reads it): lease
            if not self.executor.still_works():
                # Failing the batch over would fail every job this worker takes next.
                self._retrying(lambda session: hand_back(session, batch, failed_seconds),
                               f"handing back batch {batch_id}")
                raise EngineBroken(f"the engine of {self.worker_id} is broken; batch "
                                   f"{batch_id} was handed back") from error
            self._fail_over(batch, f"{type(error).__name__}: {error}", failed_seconds)
            return BatchRun(batch_id, claimed=True, recorded=False, jobs=len(batch.jobs),
                            failed_over=True)
        if self.recorder is not None and not tracing.enabled():
            def record() -> BatchRun:
                # The lease is kept while the batch waits for the recorder, so a slow
                # record ahead of it does not hand a finished batch to the sweeper.
                keeper.stop()
                return self._record(batch, executed)

            self.recorder.submit(record)
            return BatchRun(batch_id, claimed=True, recorded=False, jobs=len(batch.jobs),
                            recording=True)
        keeper.stop()
        return self._record(batch, executed)

    def _record(self, batch: ClaimedBatch, executed: ExecutedBatch) -> BatchRun:
        batch_id = batch.id
        outcomes = self.costing.cost(batch, executed.outcomes)
        # The answers are made and paid for in engine time: wait out a database restart
        # rather than run them again after the lease.
        recorded = self._retrying(
            lambda session: record_batch(session, batch, outcomes,
                                         executed.engine_seconds, self.cache,
                                         also=executed.record_with),
            f"recording batch {batch_id}")
        if not recorded:
            log.warning("batch %s was taken over while running; its results were dropped",
                        batch_id)
        else:
            count_recorded_batch(self.sessions, batch_id, batch.model, executed.engine_seconds)
            finalize_ready(self.sessions, self.store,
                           sorted({job.submission_id for job in batch.jobs}))
        return BatchRun(batch_id, claimed=True, recorded=recorded, jobs=len(batch.jobs))

    def _retrying(self, work: Callable[[Session], T], what: str) -> T:
        return with_retries(self.sessions, work,
                            within_seconds=self.settings.database_retry_seconds, what=what)

    def _fail_over(self, batch: ClaimedBatch, reason: str, failed_seconds: float) -> None:
        """Now, not after the lease: split the batch so the culprit is found by bisection,
        or retry or fail a lone job."""
        outcome: Failover = self._retrying(
            lambda session: fail_over(session, batch, max_attempts=self.settings.max_attempts,
                                      reason=reason, failed_seconds=failed_seconds),
            f"failing over batch {batch.id}")
        if not outcome.held:
            log.warning("batch %s was taken over while running; not failing it over",
                        batch.id)
            return
        if outcome.failed_jobs:
            log.error("batch %s: %d job(s) failed with engine_error after %d attempts alone",
                      batch.id, len(outcome.failed_jobs), self.settings.max_attempts)
            finalize_ready(self.sessions, self.store,
                           sorted({job.submission_id for job in batch.jobs}))
        if self.dispatcher is None:  # marked never sent: the next sweep sends them
            with self.sessions() as session:
                release_undelivered(session, outcome.rerun)
                session.commit()
            return
        ring(self.dispatcher, self.sessions, [(rerun, batch.model, None)
                                              for rerun in outcome.rerun])
