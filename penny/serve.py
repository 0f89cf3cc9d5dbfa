"""Long-running roles: all-in-one (`penny up`), API, coalescer.

Each ends cleanly on SIGTERM or SIGINT: it stops taking work, lets what runs finish, hands
back what it took but never started, and stops the embedded Postgres it started.
"""

from __future__ import annotations

import ipaddress
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from penny.database import stop_embedded_postgres
from penny.errors import UnsafeBinding
from penny.runtime import Runtime, open_runtime
from penny.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def _stopping_on_signals(on_signal: Callable[[], None]) -> Iterator[None]:
    """SIGTERM and SIGINT call `on_signal` instead of ending the process on the spot.

    uvicorn handles both while it serves and, once its own shutdown is done, raises the
    signal again for whatever handler was there before it. With the default handlers that
    killed the process right there: the in-process pipeline never handed its batches back
    and the embedded Postgres was left running."""
    previous = {signum: signal.getsignal(signum) for signum in _STOP_SIGNALS}
    for signum in _STOP_SIGNALS:
        signal.signal(signum, lambda *_: on_signal())
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class _Server(uvicorn.Server):
    """uvicorn that also tells `on_exit` the moment a signal asks it to stop, so workers
    take no new batch while uvicorn drains its requests."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()
        super().handle_exit(sig, frame)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name that may resolve anywhere


def refuse_open_binding(runtime: Runtime) -> None:
    """With no API key anywhere penny serves everyone as one tenant: fine on loopback,
    not on an address other hosts reach, unless PENNY_ALLOW_UNAUTHENTICATED says so."""
    from models.tenants import any_key_exists

    settings = runtime.settings
    if settings.api_keys or settings.allow_unauthenticated or _is_loopback(settings.api_host):
        return
    with runtime.sessions() as session:
        if any_key_exists(session):
            return
    raise UnsafeBinding(
        f"refusing to listen on {settings.api_host}: no API keys are configured, so anyone "
        "who can reach it could use it. Make a key (`penny keys create <tenant>`), set "
        "PENNY_API_KEYS, bind to 127.0.0.1, or set PENNY_ALLOW_UNAUTHENTICATED=true to "
        "serve without auth on purpose")


def _serve(app: FastAPI, settings: Settings, on_exit: Callable[[], None]) -> None:
    # log_config=None: uvicorn's records go through penny's handler (text or JSON).
    config = uvicorn.Config(app, host=settings.api_host, port=settings.api_port,
                            log_level="info", log_config=None)
    _Server(config, on_exit).run()


def serve_api(settings: Settings) -> None:
    from api.app import create_app

    with _stopping_on_signals(lambda: None):
        runtime = open_runtime(settings)
        try:
            refuse_open_binding(runtime)
            _serve(create_app(runtime), settings, lambda: None)
        finally:
            runtime.close()
            stop_embedded_postgres()


def serve_coalescer(settings: Settings) -> None:
    from coalescer.runner import Coalescer
    from delivery.loop import WebhookDeliverer
    from workers.celery_app import CeleryDispatcher, make_celery
    from workers.chat_tokenizer import ChatTokenizer

    stop = threading.Event()
    with _stopping_on_signals(stop.set):
        runtime = open_runtime(settings)
        try:
            # Tokenizers only (no weights): the coalescer groups jobs by their exact token
            # prefix. Embedding models have none: there is no prefix cache to group for.
            tokenizers = {model: ChatTokenizer.for_model(settings, model)
                          for model in settings.models}
            coalescer = Coalescer(settings, runtime.sessions,
                                  CeleryDispatcher(make_celery(settings)), runtime.store,
                                  settings.served_models, tokenizers)
            # Webhooks go out from this role, on a thread of their own: a slow receiver
            # must not hold up a window.
            webhooks = threading.Thread(
                target=WebhookDeliverer(settings, runtime.sessions).run, args=(stop,),
                name="webhooks", daemon=True)
            webhooks.start()
            try:
                coalescer.run(stop)
            finally:
                stop.set()
                webhooks.join()
        finally:
            runtime.close()
            stop_embedded_postgres()


def serve_all_in_one(settings: Settings) -> None:
    from api.app import create_app
    from workers.inprocess import InProcessPipeline
    from workers.sentence_embedder import SentenceTransformerEmbedder
    from workers.vllm_engine import VllmEngine

    stopping = threading.Event()  # a signal before the pipeline runs: do not start it
    with _stopping_on_signals(stopping.set):
        runtime = open_runtime(settings)
        try:
            refuse_open_binding(runtime)
            engines = [VllmEngine(settings, model) for model in settings.models]
            embedders = [SentenceTransformerEmbedder(settings, model)
                         for model in settings.embedding_models]
            if stopping.is_set():
                return
            pipeline = InProcessPipeline(runtime, engines, embedders)
            with _stopping_on_signals(pipeline.stop), pipeline:
                _serve(create_app(runtime, pipeline), settings, pipeline.stop)
        finally:
            runtime.close()
            stop_embedded_postgres()
