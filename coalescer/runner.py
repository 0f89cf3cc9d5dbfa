"""The coalescer loop: the I/O shell around the pure planning core.

Each tick looks at the queue, decides (with `window_should_close`) whether the current
window is over, claims queued jobs with SKIP LOCKED, plans batches, writes them, and
dispatches them. Every few seconds it also runs the sweeper.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from sqlalchemy.orm import Session, sessionmaker

from coalescer.dispatch import Dispatcher
from coalescer.planning import (
    BatchLimits,
    WindowBounds,
    WindowState,
    models_with_room,
    plan_batches,
    window_should_close,
)
from models.queue import (
    claim_queued_jobs,
    create_batches,
    pending_batch_counts,
    queued_snapshot,
)
from penny.settings import Settings
from storage.port import ObjectStore
from workers.sweeper import sweep

log = logging.getLogger(__name__)


class Coalescer:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        dispatcher: Dispatcher,
        store: ObjectStore,
        models: Sequence[str],
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.dispatcher = dispatcher
        self.store = store
        self.models = list(models)
        self.limits = BatchLimits(settings.max_batch_jobs, settings.max_batch_tokens)
        self.bounds = WindowBounds(settings.window_min_ms, settings.window_max_ms)
        self._window_opened: float | None = None
        self._last_seen_jobs = 0
        self._last_sweep = 0.0

    def tick(self) -> int:
        """One look at the queue; returns how many batches were dispatched."""
        now = time.monotonic()
        if now - self._last_sweep >= self.settings.sweep_interval_seconds:
            self._last_sweep = now
            sweep(self.settings, self.sessions, self.dispatcher, self.store)
        with self.sessions() as session:
            ready_models = models_with_room(
                pending_batch_counts(session), self.models, self.settings.max_pending_batches
            )
            if not ready_models:
                return 0
            snapshot = queued_snapshot(session, ready_models)
            if snapshot.jobs == 0:
                self._window_opened, self._last_seen_jobs = None, 0
                return 0
            if self._window_opened is None:
                self._window_opened = now
            state = WindowState(
                waited_ms=(now - self._window_opened) * 1000,
                queued_jobs=snapshot.jobs,
                queued_tokens=snapshot.tokens,
                grew_since_last_look=snapshot.jobs > self._last_seen_jobs,
            )
            self._last_seen_jobs = snapshot.jobs
            if not window_should_close(state, self.bounds, self.limits):
                return 0
            claimed = claim_queued_jobs(
                session, ready_models, self.limits.max_jobs * len(ready_models)
            )
            planned = plan_batches(claimed, self.limits)
            batch_ids = create_batches(session, planned)
            session.commit()
        self._window_opened, self._last_seen_jobs = None, 0
        # Dispatch after commit: a worker must find the batch row when the doorbell rings.
        for batch_id, plan in zip(batch_ids, planned, strict=True):
            self.dispatcher.dispatch(batch_id, plan.model)
        if planned:
            log.info("window closed: %d jobs in %d batches", len(claimed), len(planned))
        return len(planned)

    def run(self, stop: threading.Event) -> None:
        interval = self.settings.poll_interval_ms / 1000
        while not stop.is_set():
            try:
                dispatched = self.tick()
            except Exception:  # a database blip must not end the loop; next tick retries
                log.exception("coalescer tick failed")
                dispatched = 0
            if not dispatched:
                stop.wait(interval)
