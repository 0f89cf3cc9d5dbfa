"""When a coalescing window closes, and how much work the engines can take now."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from coalescer.planning import BatchLimits


@dataclass(frozen=True)
class WindowState:
    """What the runner knows about queued work when it decides whether to close a window."""

    waited_ms: float  # since the window opened (the first queued job was seen)
    queued_jobs: int
    queued_tokens: int
    grew_since_last_look: bool
    urgent_jobs: int = 0  # queued jobs close to their completion deadline


@dataclass(frozen=True)
class WindowBounds:
    min_ms: int
    max_ms: int


def window_should_close(
    state: WindowState, bounds: WindowBounds, limits: BatchLimits
) -> bool:
    """Close at once when a full batch is waiting or a job is near its deadline; otherwise
    after `min_ms` if arrivals have stopped, and never later than `max_ms` while they keep
    coming."""
    if state.queued_jobs == 0:
        return False
    if state.urgent_jobs > 0:
        return True
    if state.queued_jobs >= limits.max_jobs or state.queued_tokens >= limits.max_tokens:
        return True
    if state.waited_ms >= bounds.max_ms:
        return True
    return state.waited_ms >= bounds.min_ms and not state.grew_since_last_look


def batch_room(
    pending_batches: Mapping[str, int],
    live_workers: Mapping[str, int],
    models: Sequence[str],
    max_pending_per_worker: int,
) -> dict[str, int]:
    """How many new batches each model may get now. Jobs wait in the queue while a model's
    engines are backed up, so a busy engine gets one big, well-grouped batch later instead
    of many small ones now. A model with no registered worker counts as one (embedded mode,
    or workers that have not said hello yet)."""
    room: dict[str, int] = {}
    for model in models:
        capacity = max_pending_per_worker * max(1, live_workers.get(model, 0))
        free = capacity - pending_batches.get(model, 0)
        if free > 0:
            room[model] = free
    return room
