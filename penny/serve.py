"""Long-running roles: all-in-one (`penny up`), API, coalescer."""

from __future__ import annotations

import signal
import threading

import uvicorn

from penny.runtime import open_runtime
from penny.settings import Settings


def serve_api(settings: Settings) -> None:
    from api.app import create_app

    runtime = open_runtime(settings)
    try:
        # log_config=None: uvicorn's records go through penny's handler (text or JSON).
        uvicorn.run(create_app(runtime), host=settings.api_host, port=settings.api_port,
                    log_level="info", log_config=None)
    finally:
        runtime.close()


def serve_coalescer(settings: Settings) -> None:
    from coalescer.runner import Coalescer
    from workers.celery_app import CeleryDispatcher, make_celery
    from workers.chat_tokenizer import ChatTokenizer

    runtime = open_runtime(settings)
    # Tokenizers only (no weights): the coalescer groups jobs by their exact token prefix.
    # Embedding models have none: there is no prefix cache to group their jobs for.
    tokenizers = {model: ChatTokenizer.for_model(settings, model) for model in settings.models}
    coalescer = Coalescer(settings, runtime.sessions, CeleryDispatcher(make_celery(settings)),
                          runtime.store, settings.served_models, tokenizers)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        coalescer.run(stop)
    finally:
        runtime.close()


def serve_all_in_one(settings: Settings) -> None:
    from api.app import create_app
    from workers.inprocess import InProcessPipeline
    from workers.sentence_embedder import SentenceTransformerEmbedder
    from workers.vllm_engine import VllmEngine

    runtime = open_runtime(settings)
    engines = [VllmEngine(settings, model) for model in settings.models]
    embedders = [SentenceTransformerEmbedder(settings, model)
                 for model in settings.embedding_models]
    try:
        with InProcessPipeline(runtime, engines, embedders) as pipeline:
            uvicorn.run(create_app(runtime, pipeline), host=settings.api_host,
                        port=settings.api_port, log_level="info", log_config=None)
    finally:
        runtime.close()
