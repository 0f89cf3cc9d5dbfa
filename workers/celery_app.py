"""Celery wiring: the doorbell between coalescer and workers. Postgres holds the truth;
a message only says "batch X is ready", so losing or repeating one is harmless."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import TYPE_CHECKING

from celery import Celery

from penny.settings import Settings
from workers.presence import Presence

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from penny.runtime import Runtime
    from workers.execution import BatchExecutor

log = logging.getLogger(__name__)

RUN_BATCH_TASK = "penny.run_batch"
# A worker whose engine broke exits with this, for its supervisor to restart it.
EXIT_ENGINE_BROKEN = 70


def queue_for(model: str) -> str:
    """The queue every worker of `model` reads: batches with no preferred worker."""
    return f"penny.model.{model}"


def queue_for_worker(worker_id: str) -> str:
    """The queue only this worker reads: batches routed to it by prefix affinity."""
    return f"penny.worker.{worker_id}"


def make_celery(settings: Settings) -> Celery:
    if not settings.redis_url:
        raise ValueError("distributed mode needs PENNY_REDIS_URL")
    app = Celery("penny", broker=settings.redis_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


class CeleryDispatcher:
    def __init__(self, app: Celery) -> None:
        self.app = app

    def dispatch(self, batch_id: uuid.UUID, model: str, worker: str | None = None) -> None:
        queue = queue_for_worker(worker) if worker else queue_for(model)
        self.app.send_task(RUN_BATCH_TASK, args=[str(batch_id)], queue=queue)


def _executor(settings: Settings, model: str, sessions: sessionmaker[Session]) -> BatchExecutor:
    """The model loaded for this worker: an embedder for an embedding model (vLLM is never
    imported then), a vLLM engine for anything else, behind opt-in prompt compression and,
    when they are on, the semantic cache and the router's classifier (with embedders of
    their own: the API never embeds)."""
    if model in settings.embedding_models:
        from workers.embedding_execution import EmbeddingExecutor
        from workers.sentence_embedder import SentenceTransformerEmbedder

        return EmbeddingExecutor(SentenceTransformerEmbedder(settings, model), settings)
    from workers.compression_execution import compressing
    from workers.execution import GenerationExecutor
    from workers.sentence_embedder import SentenceTransformerEmbedder
    from workers.vllm_engine import VllmEngine

    engine = VllmEngine(settings, model)
    embedders: dict[str, SentenceTransformerEmbedder] = {}

    def embedder_of(name: str) -> SentenceTransformerEmbedder:
        # One per process, loaded when first needed; one copy when compression, the cache
        # and the classifier read the same model.
        if name not in embedders:
            embedders[name] = SentenceTransformerEmbedder(settings, name)
        return embedders[name]

    questions = settings.semantic_cache_embedding_model or settings.default_embedding_model
    executor: BatchExecutor = compressing(GenerationExecutor(engine, settings), engine,
                                          lambda: embedder_of(questions))
    if settings.semantic_cache:
        from workers.semantic_execution import SemanticExecutor

        executor = SemanticExecutor(executor, embedder_of(questions), sessions, settings,
                                    judge=engine if settings.semantic_cache_judge else None)
    if settings.router_classifier and len(settings.tiers) > 1:
        from workers.router_step import RouterStep

        executor = RouterStep(executor, embedder_of(settings.default_embedding_model),
                              sessions, settings)
    return executor


def run_worker(settings: Settings, model: str, *, loglevel: str = "INFO") -> None:
    """Start one Celery worker process for `model`: the model loads once, here, before the
    first message is taken, and every batch runs in this same process (solo pool)."""
    from penny.runtime import open_runtime

    runtime = open_runtime(settings)
    try:
        _consume(settings, model, runtime, loglevel)
    finally:
        runtime.close()  # after a warm shutdown: the batch in flight is recorded by now


def _consume(settings: Settings, model: str, runtime: Runtime, loglevel: str) -> None:
    from workers.execution import BatchRunner, EngineBroken

    executor = _executor(settings, model, runtime.sessions)
    worker_id = f"{socket.gethostname()}-{model}-{uuid.uuid4().hex[:8]}"
    app = make_celery(settings)
    runner = BatchRunner(settings, runtime.sessions, executor, runtime.store, worker_id,
                         dispatcher=CeleryDispatcher(app))

    @app.task(name=RUN_BATCH_TASK)
    def run_batch(batch_id: str) -> None:
        try:
            runner.run(uuid.UUID(batch_id))
        except EngineBroken:
            # The batch is back in Postgres for the other workers. This process's engine
            # fails even a canary: end it, so its supervisor starts a fresh one.
            log.critical("worker %s: the engine is broken; exiting", worker_id)
            logging.shutdown()
            os._exit(EXIT_ENGINE_BROKEN)

    queues = f"{queue_for_worker(worker_id)},{queue_for(model)}"
    log.info("worker %s consuming %s", worker_id, queues)
    # Say hello only once the engine is up: the coalescer routes to live workers only.
    with Presence(runtime.sessions, worker_id, model, settings.worker_heartbeat_seconds,
                  retry_seconds=settings.database_retry_seconds):
        app.worker_main([
            "worker", "--pool=solo", "--concurrency=1", "-Q", queues,
            "-n", f"penny-{uuid.uuid4().hex[:8]}@%h", "--without-gossip", "--without-mingle",
            f"--loglevel={loglevel}",
        ])
