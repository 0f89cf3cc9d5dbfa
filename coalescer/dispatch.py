"""The dispatch port: how a written batch reaches a worker (Celery, or an in-process queue)."""

from __future__ import annotations

import uuid
from typing import Protocol


class Dispatcher(Protocol):
    def dispatch(self, batch_id: uuid.UUID, model: str, worker: str | None = None) -> None:
        """Ring the doorbell of `worker`, or of any worker of `model` when None. Losing the
        ring is fine: the sweeper rings again (on the model's shared queue)."""
        ...
