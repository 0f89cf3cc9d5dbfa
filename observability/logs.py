"""Logging set-up for every role: lines for people (`text`) or one JSON object per line
for a log pipeline (`json`), chosen by `PENNY_LOG_FORMAT` or `--log-format`.

Records carry the ids of what they are about as fields: `job_id`, `batch_id`,
`submission_id`, `model`, `worker_id`. A call site names them with `extra={...}`; code
running on behalf of one batch sets them once with `log_context(...)` and every record
logged inside (vLLM's and Celery's included) carries them. The process's `role` (api,
coalescer, worker, up, run) rides on every record.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

LogFormat = Literal["text", "json"]
ID_FIELDS = ("job_id", "batch_id", "submission_id", "model", "worker_id")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_context: ContextVar[dict[str, str]] = ContextVar("penny_log_context")

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")


@contextmanager
def log_context(**ids: str) -> Iterator[None]:
    """Every record logged in this block (in this thread or task) carries `ids`."""
    token = _context.set({**_context.get({}), **ids})
    try:
        yield
    finally:
        _context.reset(token)


def logs_about_batch(
    method: Callable[Concatenate[S, uuid.UUID, P], R],
) -> Callable[Concatenate[S, uuid.UUID, P], R]:
    """Run a method that works on one batch (its first argument) inside a `log_context`
    naming that batch."""

    @functools.wraps(method)
    def wrapper(self: S, batch_id: uuid.UUID, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with log_context(batch_id=str(batch_id)):
            return method(self, batch_id, *args, **kwargs)

    return wrapper


class _ContextFields(logging.Filter):
    """Copies the process's fields and the current `log_context` onto each record; a
    field the call site passed in `extra` wins."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__()
        self._fields = fields

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in {**self._fields, **_context.get({})}.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def _ids(record: logging.LogRecord) -> dict[str, str]:
    return {key: str(value) for key in ID_FIELDS
            if (value := getattr(record, key, None)) is not None}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        role = getattr(record, "role", None)
        if role is not None:
            doc["role"] = role
        doc.update(_ids(record))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The usual line, with the record's ids appended as key=value."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = _ids(record)
        if not ids:
            return line
        head, sep, tail = line.partition("\n")  # keep a traceback below the ids
        return head + " [" + " ".join(f"{k}={v}" for k, v in ids.items()) + "]" + sep + tail


def configure_logging(log_format: LogFormat, *, verbose: bool = False,
                      role: str | None = None, **fields: str) -> None:
    """Replace the root logger's handlers with one on stderr in `log_format`. Libraries
    (uvicorn with `log_config=None`, Celery without hijacking, vLLM) log through it too."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(_ContextFields({**({"role": role} if role else {}), **fields}))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    # Python warnings and vLLM's records (vLLM installs a handler of its own unless told
    # not to, before it is imported) come through the same handler, in the same format.
    logging.captureWarnings(True)
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
