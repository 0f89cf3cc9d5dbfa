"""Long-running roles: all-in-one (`penny up`), API, coalescer.

Each ends cleanly on SIGTERM or SIGINT: it stops taking work, lets what runs finish, hands
back what it took but never started, and stops the embedded Postgres it started.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from penny.errors import UnsafeBinding
from penny.runtime import Runtime, open_runtime
from penny.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
log = logging.getLogger(__name__)
# observability.metrics.MULTIPROC_ENV, named here without importing prometheus_client:
# it picks single- or multi-process mode once, at import.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


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
                            log_level="info", log_config=None,
                            access_log=settings.api_access_log)
    _Server(config, on_exit).run()


def default_api_workers() -> int:
    """One uvicorn worker per core: a worker is one Python thread of request handling
    under its own GIL, and intake is CPU-bound in Python."""
    return max(1, os.cpu_count() or 1)


def serve_api(settings: Settings) -> None:
    workers = settings.api_workers or default_api_workers()
    if workers > 1:
        _serve_api_workers(settings, workers)
        return
    from api.app import create_app

    with _stopping_on_signals(lambda: None):
        runtime = open_runtime(settings)
        try:
            refuse_open_binding(runtime)
            _serve(create_app(runtime), settings, lambda: None)
        finally:
            runtime.close()


def _serve_api_workers(settings: Settings, workers: int) -> None:
    """`workers` forked uvicorn processes accepting on one socket. The parent migrates
    the database (and starts the embedded Postgres) once, then only supervises: SIGTERM
    or SIGINT is passed on to every worker, which drains its requests; a worker that dies
    takes the others down with it, so whatever supervises penny sees it and restarts.

    Forked, not spawned: the workers share the parent's imported code and settings
    (command-line options included). Each opens its own database pool after the fork.
    Metrics of all workers add up in /metrics through a PROMETHEUS_MULTIPROC_DIR; without
    one given, a fresh one is made for the run."""
    runtime = open_runtime(settings)
    own_metrics_dir = None
    try:
        refuse_open_binding(runtime)
        runtime.db.dispose()  # no pooled connection may cross the fork
        if not os.environ.get(MULTIPROC_ENV):
            own_metrics_dir = _shared_metrics_dir()
        shared = settings.model_copy(update={"database_url": runtime.database_url})
        config = uvicorn.Config("unused", host=settings.api_host, port=settings.api_port,
                                log_level="info", log_config=None)
        sock = config.bind_socket()  # logs where it listens
        children = [_fork_worker(shared, sock) for _ in range(workers)]
        sock.close()
        _supervise(children)
    finally:
        runtime.close()
        if own_metrics_dir is not None:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(own_metrics_dir, ignore_errors=True)


def _shared_metrics_dir() -> str | None:
    """A fresh PROMETHEUS_MULTIPROC_DIR for the workers to inherit, so /metrics adds all
    of them up; None when prometheus_client is already loaded here (penny run inside
    another Python program): its mode is fixed, each worker then reports its own."""
    if "prometheus_client" in sys.modules:
        log.warning("prometheus_client is already loaded: each API worker's /metrics "
                    "shows that worker only; set %s to add them up", MULTIPROC_ENV)
        return None
    path = tempfile.mkdtemp(prefix="penny-metrics-")
    os.environ[MULTIPROC_ENV] = path
    return path


def _fork_worker(settings: Settings, sock: socket.socket) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        from api.app import create_app

        runtime = open_runtime(settings, run_migrations=False)
        config = uvicorn.Config(create_app(runtime), log_level="info", log_config=None,
                                access_log=settings.api_access_log)
        uvicorn.Server(config).run(sockets=[sock])
        runtime.close()
        code = 0
    except BaseException:
        log.exception("penny api worker %d failed", os.getpid())
    finally:
        # Never the parent's exit path: its atexit hooks would stop the embedded Postgres.
        os._exit(code)


def _supervise(children: list[int]) -> None:
    """Wait for the workers; on a stop signal, or when one of them ends, stop them all."""
    running = set(children)
    stopping = False

    def stop_all() -> None:
        nonlocal stopping
        stopping = True
        for pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    with _stopping_on_signals(stop_all):
        while running:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            running.discard(pid)
            if running and not stopping:
                log.error("penny api worker %d ended (%d); stopping the others", pid,
                          os.waitstatus_to_exitcode(status))
                stop_all()


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
