"""The coalescer loop: the I/O shell around the pure planning core.

Each tick looks at the queue, decides (with `window_should_close`) whether the current
window is over, and then per model: claims queued jobs with SKIP LOCKED (a few batches'
worth ahead), tokenizes them, finds in-flight twins, plans the window, keeps as many
batches as the engines have room for, routes each to a worker by prefix affinity, writes
them and dispatches them. Before that it validates one OpenAI batch waiting in
`validating`, so the same tick's window already sees its jobs; every few seconds it also
runs the sweeper. Every deployment runs a coalescer, so every deployment validates.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from opentelemetry.trace import Span
from sqlalchemy.orm import Session, sessionmaker

from cache.model_identity import cache_policy
from coalescer.affinity import assign_workers
from coalescer.dispatch import Dispatcher, ring
from coalescer.planning import (
    BatchLimits,
    PlannedBatch,
    PlanOptions,
    QueuedJob,
    plan_window,
    top_up,
)
from coalescer.windows import WindowBounds, WindowState, batch_room, window_should_close
from intake.admission import IntakePolicy
from intake.limits import IntakeLimits
from intake.validation import Outcome, RetryPolicy, validate_next_batch
from models.queue import (
    QueuedRow,
    claim_queued_jobs,
    create_batches,
    pending_batch_counts,
    queued_snapshot,
)
from models.single_flight import (
    InFlight,
    attach_followers,
    attach_queued_copies,
    in_flight_leaders,
)
from models.trace_context import traceparents_of_jobs
from models.waiting_batches import batch_members, grow_batch, lock_waiting_batches
from models.workers import live_workers, worker_loads
from observability import metrics, tracing
from penny.settings import Settings
from storage.port import ObjectStore
from workers.engine import GenerationRequest
from workers.finalize import finalize_ready
from workers.sweeper import sweep, sweep_result_cache_entries

log = logging.getLogger(__name__)
TOKEN_CACHE_SIZE = 50_000


class PromptTokenizer(Protocol):
    def prompt_token_ids(self, request: GenerationRequest) -> list[int]: ...


@dataclass
class CoalescerStats:
    """What the coalescer itself costs, for the benchmark and the logs."""

    jobs_planned: int = 0
    batches: int = 0
    copies_collapsed: int = 0
    planning_seconds: float = 0.0  # the pure plan_window calls
    tokenizing_seconds: float = 0.0
    tick_seconds: float = 0.0  # whole ticks that closed a window, database work included
    batches_validated: int = 0
    validating_seconds: float = 0.0
    jobs_topped_up: int = 0  # queued jobs that joined a batch waiting for its engine


@dataclass(frozen=True)
class _Dispatch:
    batch_id: uuid.UUID
    model: str
    worker: str | None


class Coalescer:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        dispatcher: Dispatcher,
        store: ObjectStore,
        models: Sequence[str],
        tokenizers: Mapping[str, PromptTokenizer] | None = None,
        *,
        local_workers: bool = False,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.dispatcher = dispatcher
        self.store = store
        self.models = list(models)
        # Without a tokenizer for a model its jobs are planned without prefix grouping.
        self.tokenizers = dict(tokenizers or {})
        self.limits = BatchLimits(settings.max_batch_jobs, settings.max_batch_tokens)
        self.bounds = WindowBounds(settings.window_min_ms, settings.window_max_ms)
        self.urgent_within = timedelta(seconds=settings.urgent_within_seconds)
        self.stats = CoalescerStats()
        self._tokens: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._window_opened: float | None = None
        self._engines_busy = False  # every engine already has its next batch waiting
        self._last_seen_jobs = 0
        self._last_sweep = 0.0
        self._last_cache_sweep = 0.0
        # Validation answers lines from the exact result cache, under the identities of
        # the weights this process can see.
        self.cache = cache_policy(settings)
        self.intake_limits = IntakeLimits.from_settings(settings)
        self.admission = IntakePolicy.from_settings(settings)
        self.validation_retry = RetryPolicy(settings.max_validation_attempts,
                                            settings.validation_retry_seconds)
        self._validated = False  # the last tick validated a batch: more may be waiting
        self._last_validation = 0.0
        self.idle_interval = settings.idle_poll_interval_ms / 1000
        self.busy_interval = settings.busy_poll_interval_ms / 1000
        # In embedded mode the workers share this process and say when they take and
        # finish a batch (`batch_started` / `batch_finished`): the loop then sleeps through
        # a running batch instead of polling beside the engine's threads.
        self._local_workers = local_workers
        self._running_here = 0  # batches the local workers are running now
        self._running_lock = threading.Lock()  # one worker thread per model updates it
        self._wakeup = threading.Event()

    def tick(self) -> int:
        """One look at the queue; returns how many batches were dispatched."""
        now = time.monotonic()
        if now - self._last_sweep >= self.settings.sweep_interval_seconds:
            self._last_sweep = now
            sweep(self.settings, self.sessions, self.dispatcher, self.store)
        if now - self._last_cache_sweep >= self.settings.result_cache_sweep_interval_seconds:
            self._last_cache_sweep = now
            sweep_result_cache_entries(self.settings, self.sessions)
        # Not every 20 ms window tick: each look is a query, and queries stall the engine.
        # Right after a batch was validated, though, the next one may be waiting.
        if self._validated or now - self._last_validation >= self.idle_interval:
            self._last_validation = now
            self._validated = self.validate()
            now = time.monotonic()  # validating took a while; windows start after it
        with self.sessions() as session:
            workers = live_workers(session, self.settings.worker_heartbeat_seconds * 3)
            room = batch_room(pending_batch_counts(session),
                              {m: len(ids) for m, ids in workers.items()},
                              self.models, self.settings.max_pending_batches)
            self._engines_busy = not room
            # A batch waiting for a busy engine takes what arrived since it was planned:
            # the engine's next call then runs it too, instead of a call after that.
            waiting_for = [model for model in self.models if model not in room]
            if waiting_for and self.settings.grow_waiting_batches:
                self._top_up_waiting(session, waiting_for)
                session.commit()  # also releases the rows it locked and did not use
            if not room:
                return 0
            if not self._window_closes(session, list(room), now):
                return 0
            dispatches: list[_Dispatch] = []
            for model, free in room.items():
                dispatches.extend(self._plan_model(session, model, free, workers.get(model, [])))
            session.commit()
        self._window_opened, self._last_seen_jobs = None, 0
        self.stats.tick_seconds += time.monotonic() - now
        # Dispatch after commit: a worker must find the batch row when the doorbell rings.
        ring(self.dispatcher, self.sessions,
             [(item.batch_id, item.model, item.worker) for item in dispatches])
        return len(dispatches)

    def validate(self) -> bool:
        """Validate the oldest batch waiting for it, if any; True when there was one.
        One per tick: a 50,000-line file takes a while, and windows must keep closing."""
        started = time.perf_counter()
        try:
            validated = validate_next_batch(self.sessions, self.store, self.intake_limits,
                                            self.settings.max_batch_requests,
                                            self.validation_retry, cache=self.cache,
                                            admission=self.admission)
        except Exception:  # e.g. the database did not answer: nothing was claimed
            log.exception("looking for a batch to validate failed")
            return False
        if validated is None:
            return False
        if validated.outcome == Outcome.RETRY:  # logged by the validator; others may wait
            return True
        self.stats.batches_validated += 1
        self.stats.validating_seconds += time.perf_counter() - started
        log.info("batch submission %s validated: %s, %d jobs (%d from the result cache)",
                 validated.batch_id, validated.outcome, validated.jobs, validated.from_cache,
                 extra={"submission_id": str(validated.batch_id)})
        # Nothing to run (cancelled, or every line answered from the cache): end it now.
        if validated.outcome == Outcome.CANCELLED or (
                validated.jobs and validated.from_cache == validated.jobs):
            finalize_ready(self.sessions, self.store, [validated.batch_id])
        return True

    def _window_closes(self, session: Session, models: list[str], now: float) -> bool:
        snapshot = queued_snapshot(session, models, self.urgent_within)
        if snapshot.jobs == 0:
            self._window_opened, self._last_seen_jobs = None, 0
            return False
        if self._window_opened is None:
            self._window_opened = now
        state = WindowState(
            waited_ms=(now - self._window_opened) * 1000,
            queued_jobs=snapshot.jobs,
            queued_tokens=snapshot.tokens,
            grew_since_last_look=snapshot.jobs > self._last_seen_jobs,
            urgent_jobs=snapshot.urgent,
        )
        self._last_seen_jobs = snapshot.jobs
        return window_should_close(state, self.bounds, self.limits)

    def _plan_model(
        self, session: Session, model: str, free: int, workers: list[str]
    ) -> list[_Dispatch]:
        horizon = free * self.limits.max_jobs * max(1, self.settings.plan_horizon_batches)
        rows = claim_queued_jobs(session, model, horizon, self.urgent_within)
        if not rows:
            return []
        jobs = self._with_tokens(model, rows)
        keys = sorted({j.single_flight_key for j in jobs if j.single_flight_key})
        in_flight = in_flight_leaders(session, keys) if self.settings.single_flight else {}
        options = self._plan_options(model)
        started = time.perf_counter()
        plan = plan_window(jobs, options, {k: str(v.leader_id) for k, v in in_flight.items()})
        self.stats.planning_seconds += time.perf_counter() - started
        # The most urgent batches go now; the rest of the horizon stays queued for later.
        chosen: list[PlannedBatch] = plan.batches[:free]
        targets = assign_workers([b.prefix_key for b in chosen], workers,
                                 worker_loads(session, model) if workers else {},
                                 self.settings.affinity_load_epsilon)
        spans = self._batch_spans(session, model, chosen)
        batch_ids = create_batches(session, chosen, targets,
                                   [tp for _, tp in spans] if spans else None)
        for (span, _), batch_id in zip(spans, batch_ids, strict=False):
            span.set_attribute("penny.batch_id", str(batch_id))
            span.end()
        leader_batch = {job: batch_id for batch, batch_id in zip(chosen, batch_ids, strict=True)
                        for job in batch.job_ids}
        followers = {f: leader for f, leader in plan.followers.items() if leader in leader_batch}
        attach_followers(session, followers, leader_batch)
        attach_followers(session, plan.joined_in_flight,
                         {str(v.leader_id): v.batch_id for v in in_flight.values()})
        beyond_horizon = (self._attach_copies_beyond_horizon(session, model, jobs,
                                                             leader_batch, in_flight)
                          if self.settings.single_flight else 0)
        planned_jobs = sum(len(b.job_ids) for b in chosen) + len(followers) + beyond_horizon
        self.stats.jobs_planned += planned_jobs + len(plan.joined_in_flight)
        self.stats.copies_collapsed += (len(followers) + len(plan.joined_in_flight)
                                        + beyond_horizon)
        self.stats.batches += len(chosen)
        for job_id in leader_batch:
            self._tokens.pop(job_id, None)
        copies = len(followers) + len(plan.joined_in_flight) + beyond_horizon
        log.info("window closed for %s: %d jobs in %d batches, %d copies collapsed", model,
                 planned_jobs, len(chosen), copies, extra={"model": model})
        metrics.record_window(model, [len(b.job_ids) for b in chosen],
                              [b.estimated_tokens for b in chosen], copies,
                              self.limits.max_jobs, self.limits.max_tokens)
        return [_Dispatch(batch_id, model, target)
                for batch_id, target in zip(batch_ids, targets, strict=True)]

    def _top_up_waiting(self, session: Session, models: Sequence[str]) -> int:
        """Grow the batches that wait for these models' engines with queued jobs; returns
        how many jobs joined (copies included). The caller commits."""
        joined = 0
        for model in models:
            waiting = lock_waiting_batches(session, model, self.limits.max_jobs)
            if not waiting:
                continue
            rows = claim_queued_jobs(session, model, self.limits.max_jobs * len(waiting),
                                     self.urgent_within)
            if not rows:
                continue
            queued = self._with_tokens(model, rows)
            keys = sorted({j.single_flight_key for j in queued if j.single_flight_key})
            in_flight = in_flight_leaders(session, keys) if self.settings.single_flight else {}
            leaders = {key: (str(v.leader_id), v.batch_id) for key, v in in_flight.items()}
            options = self._plan_options(model)
            for batch in waiting:
                if not queued:
                    break
                members = self._with_tokens(model, batch_members(session, batch.id))
                grown = top_up(members, queued, options,
                               {key: leader for key, (leader, _) in leaders.items()})
                if not grown.taken:
                    continue
                grow_batch(session, batch.id, grown.job_ids)
                attach_followers(session, grown.followers,
                                 dict.fromkeys(grown.added, batch.id))
                attach_followers(session, grown.joined_in_flight, dict(leaders.values()))
                leaders.update({job.single_flight_key: (job.id, batch.id) for job in queued
                                if job.id in grown.added and job.single_flight_key})
                queued = [job for job in queued if job.id not in grown.taken]
                joined += len(grown.taken)
                self.stats.jobs_planned += len(grown.taken)
                self.stats.jobs_topped_up += len(grown.taken)
                self.stats.copies_collapsed += (len(grown.followers)
                                                + len(grown.joined_in_flight))
                log.info("batch %s waiting for %s took %d queued jobs (%d copies)", batch.id,
                         model, len(grown.taken),
                         len(grown.followers) + len(grown.joined_in_flight),
                         extra={"model": model})
        return joined

    def _plan_options(self, model: str) -> PlanOptions:
        return PlanOptions(
            self.limits, now=datetime.now(UTC), urgent_within=self.urgent_within,
            group_prefixes=self.settings.prefix_grouping and model in self.tokenizers,
            single_flight=self.settings.single_flight,
        )

    @staticmethod
    def _batch_spans(session: Session, model: str, chosen: Sequence[PlannedBatch]
                     ) -> list[tuple[Span, str]]:
        """With tracing on, a span per batch linked to the intake requests of its jobs,
        and its traceparent for the batch row; with tracing off nothing, not a query."""
        if not tracing.enabled() or not chosen:
            return []
        submitted = traceparents_of_jobs(session, [j for b in chosen for j in b.job_ids])
        spans = []
        for batch in chosen:
            started = tracing.start_batch_span(model, len(batch.job_ids),
                                               (submitted.get(j) for j in batch.job_ids))
            if started is not None:
                spans.append(started)
        return spans

    @staticmethod
    def _attach_copies_beyond_horizon(
        session: Session, model: str, jobs: Sequence[QueuedJob],
        leader_batch: Mapping[str, uuid.UUID], in_flight: Mapping[str, InFlight],
    ) -> int:
        """Queued copies the window did not see join the leaders batched now or in flight."""
        leaders = {key: (str(v.leader_id), v.batch_id) for key, v in in_flight.items()}
        leaders.update({job.single_flight_key: (job.id, leader_batch[job.id]) for job in jobs
                        if job.single_flight_key and job.id in leader_batch})
        return attach_queued_copies(session, model, leaders)

    def _with_tokens(self, model: str, rows: Sequence[QueuedRow]) -> list[QueuedJob]:
        """Attach each job's prompt token ids, and make its token estimate exact (prompt
        plus output allowance; intake could only guess from characters). Remembered across
        ticks, because jobs the plan leaves for later come back next window."""
        tokenizer = self.tokenizers.get(model)
        if tokenizer is None or not self.settings.prefix_grouping:
            return [row.job for row in rows]
        started = time.perf_counter()
        jobs = []
        for row in rows:
            tokens = self._tokens.get(row.job.id)
            if tokens is None:
                request = GenerationRequest.from_stored(row.job.id, row.request, cache_salt="")
                tokens = tuple(tokenizer.prompt_token_ids(request))
                self._tokens[row.job.id] = tokens
                if len(self._tokens) > TOKEN_CACHE_SIZE:
                    self._tokens.popitem(last=False)
            jobs.append(replace(row.job, prompt_tokens=tokens,
                                estimated_tokens=len(tokens) + row.job.output_tokens))
        self.stats.tokenizing_seconds += time.perf_counter() - started
        return jobs

    def batch_started(self) -> None:
        """A local worker took a batch: its engine has room for the next one now."""
        with self._running_lock:
            self._running_here += 1
        self._wakeup.set()

    def batch_finished(self) -> None:
        with self._running_lock:
            self._running_here -= 1
        self._wakeup.set()

    def wake(self) -> None:
        """Look at the queue now instead of at the next poll (e.g. to notice a stop)."""
        self._wakeup.set()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                dispatched = self.tick()
            except Exception:  # a database blip must not end the loop; next tick retries
                log.exception("coalescer tick failed")
                dispatched = 0
            if not dispatched:
                self._pause(stop, self._next_look())

    def _next_look(self) -> float:
        """Seconds until the next tick. Every look is a few queries, and on a machine whose
        cores the engine uses each one is engine time lost, so look only as often as
        something can have changed."""
        window_open = self._window_opened is not None and not self._engines_busy
        if window_open or self._validated:  # a window to close, or more files to validate
            return self.settings.poll_interval_ms / 1000
        if self._local_workers and self._running_here:
            if self._engines_busy and not self.settings.grow_waiting_batches:
                # The next batch is waiting and takes nothing more: nothing is planned
                # before a worker takes it, and that worker rings. The sweeper still runs
                # on time.
                return self.settings.sweep_interval_seconds
            # The engine takes nothing new before its batch ends; work that arrives
            # meanwhile only needs to be planned before then, or to join the next batch
            # while it waits (a worker taking that batch rings for the one after).
            return max(self.busy_interval, self.idle_interval)
        return self.idle_interval

    def _pause(self, stop: threading.Event, seconds: float) -> None:
        if not self._local_workers:
            stop.wait(seconds)
            return
        # Woken early by a local worker; `stop` is checked at least every idle interval.
        deadline = time.monotonic() + seconds
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self._wakeup.wait(min(left, self.idle_interval)):
                self._wakeup.clear()
                return
