"""Gauges read from Postgres at scrape time: the jobs table is the queue, so its state is
read where it lives instead of being mirrored by every process that changes it."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from models.gauges import QueueGauges, queue_gauges
from models.status import JobStatus

log = logging.getLogger(__name__)
UNFINISHED = (JobStatus.QUEUED, JobStatus.BATCHED, JobStatus.RUNNING)


class QueueCollector(Collector):
    def __init__(self, sessions: sessionmaker[Session], models: list[str],
                 stale_worker_seconds: float) -> None:
        self._sessions = sessions
        self._models = models
        self._stale_after = stale_worker_seconds

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("penny_queue_scrape_ok",
                               "1 when the queue gauges below were read from Postgres.")
        try:
            with self._sessions() as session:
                gauges = queue_gauges(session, self._stale_after)
        except SQLAlchemyError:
            log.warning("metrics scrape: the database did not answer", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from self._families(gauges)

    def _families(self, gauges: QueueGauges) -> Iterator[GaugeMetricFamily]:
        # Every served model and state is present, zeros included, so a dashboard's
        # series do not vanish when a queue drains.
        models = sorted({*self._models, *(m for m, _ in gauges.jobs)})
        jobs = GaugeMetricFamily("penny_jobs", "Unfinished jobs by model and state.",
                                 labels=["model", "state"])
        depth = GaugeMetricFamily("penny_queue_depth", "Queued jobs by model.",
                                  labels=["model"])
        age = GaugeMetricFamily("penny_queue_oldest_age_seconds",
                                "How long the oldest queued job of a model has waited.",
                                labels=["model"])
        workers = GaugeMetricFamily("penny_live_workers",
                                    "Workers with a recent heartbeat, by model.",
                                    labels=["model"])
        for model in models:
            for state in UNFINISHED:
                jobs.add_metric([model, state.value], gauges.jobs.get((model, state.value), 0))
            depth.add_metric([model], gauges.jobs.get((model, JobStatus.QUEUED.value), 0))
            age.add_metric([model], gauges.oldest_queued_seconds.get(model, 0.0))
            workers.add_metric([model], gauges.live_workers.get(model, 0))
        validating = GaugeMetricFamily(
            "penny_batches_validating", "OpenAI batches whose input file waits to be parsed.")
        validating.add_metric([], gauges.validating_batches)
        yield from (jobs, depth, age, workers, validating)


def queue_registry(sessions: sessionmaker[Session], models: list[str],
                   stale_worker_seconds: float) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(sessions, models, stale_worker_seconds))
    return registry
