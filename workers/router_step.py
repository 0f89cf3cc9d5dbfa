"""The router's classifier on the worker: before a batch runs, its `auto` jobs that the
cheap features did not call hard have their prompt embedded and the latest stored
classifier asked (`routing.classifier.consult`). A job it sends to another tier goes back
to the queue there without running (nothing billed); the rest run here with the
classifier's word in their route.

It runs here, beside the model, because the API never embeds (it never imports torch).
A job is classified once: the route it carries on says so, so it never bounces between
tiers. The latest classifier is read at most once a minute.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from models.queue import ClaimedBatch, ClaimedJob, JobOutcome, Reroute
from models.router_classifiers import latest_classifier
from models.tables import Job
from penny.settings import Settings
from routing.classifier import RouterClassifier, consult
from routing.router import Difficulty
from workers.embedder import Embedder, EmbeddingRequest
from workers.execution import BatchExecutor, ExecutedBatch

log = logging.getLogger(__name__)

REFRESH_SECONDS = 60.0
AUTO_MODE = "auto"


def prompt_text(request: Mapping[str, Any]) -> str:
    """What the classifier reads: every message's content joined, as the cheap features
    read it at intake (and as `penny train-router` embeds a labelled prompt)."""
    messages = request.get("messages")
    if messages:
        return "\n".join(str(m.get("content", "")) for m in messages)
    return str(request.get("prompt") or "")


def awaits_classifier(route: Mapping[str, Any] | None) -> bool:
    return (route is not None and route.get("mode") == AUTO_MODE
            and route.get("difficulty") in ("easy", "medium")
            and "classifier" not in route)


class RouterStep:
    """Wraps an executor; jobs that do not await the classifier pass straight through."""

    def __init__(self, inner: BatchExecutor, embedder: Embedder,
                 sessions: sessionmaker[Session], settings: Settings,
                 refresh_seconds: float = REFRESH_SECONDS) -> None:
        self.inner, self.embedder, self.sessions = inner, embedder, sessions
        self.tiers = list(settings.tiers)
        self.refresh_seconds = refresh_seconds
        self._current: tuple[RouterClassifier | None, float] | None = None
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    def still_works(self) -> bool:
        return self.inner.still_works()

    def classifier(self) -> RouterClassifier | None:
        with self._lock:
            if (self._current is not None
                    and time.monotonic() - self._current[1] < self.refresh_seconds):
                return self._current[0]
            with self.sessions() as session:
                found = latest_classifier(session)
            if found is not None and found.embedding_model != self.embedder.model_name:
                log.warning("router classifier v%s reads %s embeddings; this worker has %s, "
                            "so auto routes by its features alone", found.version,
                            found.embedding_model, self.embedder.model_name)
                found = None
            self._current = (found, time.monotonic())
            return found

    def execute(self, batch: ClaimedBatch) -> ExecutedBatch:
        waiting = [job for job in batch.jobs if awaits_classifier(job.route)]
        classifier = self.classifier() if waiting and len(self.tiers) > 1 else None
        if classifier is None:
            return self.inner.execute(batch)
        done = self.embedder.embed([EmbeddingRequest(key=str(job.id),
                                                     inputs=(prompt_text(job.request),))
                                    for job in waiting])
        routes: dict[Any, dict[str, Any]] = {}
        moved: dict[Any, Reroute] = {}
        for job, embedded in zip(waiting, done.embeddings, strict=True):
            if not embedded.ok or not embedded.vectors:
                continue  # unclassified, it runs where the features sent it
            route = dict(job.route or {})
            decision = consult(Difficulty[str(route["difficulty"]).upper()],
                               classifier.probability(embedded.vectors[0]),
                               classifier.threshold, self.tiers)
            route.update(tier=decision.model, classifier=classifier.version,
                         reason=f"{route.get('reason', '')}; {decision.reason}")
            if decision.model != batch.model:
                moved[job.id] = Reroute(decision.model, route)
            else:
                routes[job.id] = route
        to_run = [dataclasses.replace(job, route=routes.get(job.id, job.route))
                  for job in batch.jobs if job.id not in moved]
        ran = (self.inner.execute(dataclasses.replace(batch, jobs=to_run)) if to_run
               else ExecutedBatch([], 0.0))
        by_id = {o.job.id: o for o in ran.outcomes}
        outcomes = [by_id[job.id] if job.id in by_id else _rerouted(job, moved[job.id])
                    for job in batch.jobs]

        def bookkeeping(session: Session) -> None:
            for job_id, route in routes.items():
                session.execute(update(Job).where(Job.id == job_id).values(route=route))
            if ran.record_with is not None:
                ran.record_with(session)

        if moved:
            log.info("batch %s: the router classifier sent %d of %d jobs to another tier",
                     batch.id, len(moved), len(batch.jobs))
        return ExecutedBatch(outcomes, ran.engine_seconds, record_with=bookkeeping)


def _rerouted(job: ClaimedJob, reroute: Reroute) -> JobOutcome:
    return JobOutcome(job, None, None, None, reroute=reroute)
