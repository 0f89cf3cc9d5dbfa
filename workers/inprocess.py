"""Embedded mode: the same coalescer and batch runner, connected by a local queue instead
of Redis, each on its own thread in this process."""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections.abc import Sequence
from functools import partial
from types import TracebackType

from coalescer.runner import Coalescer
from delivery.loop import WebhookDeliverer
from models.queue import release_undelivered
from penny.runtime import Runtime
from penny.settings import Settings
from workers.compression_execution import compressing
from workers.embedder import Embedder
from workers.embedding_execution import EmbeddingExecutor
from workers.engine import Engine
from workers.execution import BatchExecutor, BatchRunner, EngineBroken, GenerationExecutor
from workers.recorder import BackgroundRecorder

log = logging.getLogger(__name__)


class LocalDispatcher:
    """One queue per model, as Celery has one queue per model."""

    def __init__(self, models: Sequence[str]) -> None:
        self.queues: dict[str, queue.Queue[uuid.UUID]] = {m: queue.Queue() for m in models}

    def dispatch(self, batch_id: uuid.UUID, model: str, worker: str | None = None) -> None:
        batches = self.queues.get(model)
        if batches is None:
            # The sweeper re-sends every stale batch, also those of models this process
            # does not load (an embeddings batch under `penny run`); it waits for a process
            # that does.
            log.debug("batch %s is for %s, which this process does not run", batch_id, model)
            return
        batches.put(batch_id)  # one worker per model in process: no routing


def _compression_embedder(settings: Settings, loaded: Embedder | None) -> Embedder:
    """The embedder compression uses: the one this process loaded, else its own (loaded on
    the first job that asks for compression)."""
    if loaded is not None:
        return loaded
    from workers.sentence_embedder import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(
        settings, settings.semantic_cache_embedding_model or settings.default_embedding_model)


def _generation_executor(runtime: Runtime, engine: Engine,
                         embedders: Sequence[Embedder]) -> BatchExecutor:
    """A generation executor, behind the semantic cache when it is on (its questions are
    embedded by the loaded embedder of the configured embedding model), and behind the
    router's classifier when that is on."""
    executor = _semantic_executor(runtime, engine, embedders)
    settings = runtime.settings
    if not (settings.router_classifier and len(settings.tiers) > 1):
        return executor
    embedder = next((e for e in embedders
                     if e.model_name == settings.default_embedding_model), None)
    if embedder is None:
        log.warning("the router classifier is on but embedding model %s is not loaded here;"
                    " %s routes by features alone", settings.default_embedding_model,
                    engine.model_name)
        return executor
    from workers.router_step import RouterStep

    return RouterStep(executor, embedder, runtime.sessions, settings)


def _semantic_executor(runtime: Runtime, engine: Engine,
                       embedders: Sequence[Embedder]) -> BatchExecutor:
    settings = runtime.settings
    wanted = settings.semantic_cache_embedding_model or settings.default_embedding_model
    embedder = next((e for e in embedders if e.model_name == wanted), None)
    executor: BatchExecutor = compressing(
        GenerationExecutor(engine, settings), engine,
        partial(_compression_embedder, settings, embedder))
    if not settings.semantic_cache:
        return executor
    if embedder is None:
        log.warning("the semantic cache is on but embedding model %s is not loaded here; "
                    "%s runs without it", wanted, engine.model_name)
        return executor
    from workers.semantic_execution import SemanticExecutor

    return SemanticExecutor(executor, embedder, runtime.sessions, settings,
                            judge=engine if settings.semantic_cache_judge else None)


class InProcessPipeline:
    """A coalescer thread, a webhook delivery thread, and one worker thread per engine and
    per embedder. Use as a
    context manager. Only the models given here are planned: an embeddings-only pipeline
    never needs vLLM."""

    def __init__(self, runtime: Runtime, engines: Sequence[Engine],
                 embedders: Sequence[Embedder] = ()) -> None:
        executors: list[BatchExecutor] = [
            *(_generation_executor(runtime, engine, embedders) for engine in engines),
            *(EmbeddingExecutor(embedder, runtime.settings) for embedder in embedders),
        ]
        models = [executor.model_name for executor in executors]
        self.dispatcher = LocalDispatcher(models)
        # Embedding models get no tokenizer: their jobs share no prefix cache to group for.
        self.coalescer = Coalescer(
            runtime.settings, runtime.sessions, self.dispatcher, runtime.store, models,
            tokenizers={engine.model_name: engine for engine in engines}, local_workers=True,
        )
        self._sessions = runtime.sessions
        self._stop = threading.Event()
        self.webhooks = WebhookDeliverer(runtime.settings, runtime.sessions)
        self._threads = [
            threading.Thread(target=self.coalescer.run, args=(self._stop,), name="coalescer",
                             daemon=True),
            threading.Thread(target=self.webhooks.run, args=(self._stop,), name="webhooks",
                             daemon=True),
        ]
        self._workers: dict[str, threading.Thread] = {}
        # One recorder for all engines: records are short next to generation, and one
        # thread more beside the engines is the most a 2-core machine should pay.
        self.recorder = BackgroundRecorder()
        for executor in executors:
            runner = BatchRunner(
                runtime.settings, runtime.sessions, executor, runtime.store,
                worker_id=f"in-process:{executor.model_name}", listener=self.coalescer,
                dispatcher=self.dispatcher, recorder=self.recorder,
            )
            self._workers[executor.model_name] = threading.Thread(
                target=self._work, args=(runner, self.dispatcher.queues[executor.model_name]),
                name=f"worker-{executor.model_name}", daemon=True,
            )
        self._threads.extend(self._workers.values())

    def live_models(self) -> list[str]:
        """Models whose worker thread is running (the engine loaded before it started):
        what `/readyz` checks in embedded mode, where no worker heartbeats."""
        return [model for model, thread in self._workers.items() if thread.is_alive()]

    def stop(self) -> None:
        """Take no new batch from now on; the batch a worker is running finishes (and is
        recorded). Safe to call from a signal handler."""
        self._stop.set()

    def _work(self, runner: BatchRunner, batches: queue.Queue[uuid.UUID]) -> None:
        while not self._stop.is_set():
            try:
                batch_id = batches.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                runner.run(batch_id)
            except EngineBroken:  # its batch was handed back; no more work for this engine
                log.critical("the engine for %s is broken; its worker stops (restart "
                             "penny to load it again)", runner.executor.model_name)
                return
            except Exception:  # the sweeper re-dispatches the batch once its lease runs out
                log.exception("batch %s failed in the in-process worker", batch_id)

    def __enter__(self) -> InProcessPipeline:
        self.recorder.start()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self.coalescer.wake()
        for thread in self._threads:
            thread.join()
        self.recorder.close()  # the batches the engines ran are written before we go
        self._release_undelivered()

    def _release_undelivered(self) -> None:
        """Batches still in the local queues were never claimed: hand them back so the
        next process sends them at once."""
        left: list[uuid.UUID] = []
        for batches in self.dispatcher.queues.values():
            while True:
                try:
                    left.append(batches.get_nowait())
                except queue.Empty:
                    break
        if not left:
            return
        with self._sessions() as session:
            release_undelivered(session, left)
            session.commit()
        log.info("released %d undelivered batches", len(left))
