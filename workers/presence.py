"""A worker's heartbeat: while it beats, the coalescer may route batches to the worker's
own queue. A worker that stops beating drops out of routing; batches already routed to it
are re-sent to the model's shared queue by the sweeper."""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from sqlalchemy.orm import Session, sessionmaker

from models.retrying import with_retries
from models.workers import heartbeat, remove_worker

log = logging.getLogger(__name__)


class Presence:
    def __init__(self, sessions: sessionmaker[Session], worker_id: str, model: str,
                 interval_seconds: float, retry_seconds: float) -> None:
        self._sessions, self._worker_id, self._model = sessions, worker_id, model
        self._interval, self._retry_seconds = interval_seconds, retry_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="presence", daemon=True)

    def __enter__(self) -> Presence:
        # The first beat comes after the engine has loaded, seconds after the start-up
        # migration found the database: a Postgres restarting in between is waited out,
        # as a claim waits it out, rather than ending the worker with its engine.
        with_retries(self._sessions,
                     lambda session: heartbeat(session, self._worker_id, self._model),
                     within_seconds=self._retry_seconds,
                     what=f"the first heartbeat of worker {self._worker_id}")
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        try:
            with self._sessions() as session:
                remove_worker(session, self._worker_id)
        except Exception:  # leaving quietly is fine: the heartbeat simply goes stale
            log.exception("could not deregister worker %s", self._worker_id)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._beat()
            except Exception:  # a missed beat or two is within the staleness slack
                log.exception("heartbeat of worker %s failed", self._worker_id)

    def _beat(self) -> None:
        with self._sessions() as session:
            heartbeat(session, self._worker_id, self._model)
