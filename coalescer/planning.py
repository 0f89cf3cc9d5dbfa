"""The pure planning core: queued jobs in, batches out. No I/O, no clock.

Jobs are grouped by model (a batch runs on one engine), kept in priority-then-arrival
order, and cut into batches bounded by job count and token budget.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class QueuedJob:
    id: str
    model: str
    estimated_tokens: int
    priority: int
    created_at: datetime


@dataclass(frozen=True)
class BatchLimits:
    max_jobs: int
    max_tokens: int


@dataclass(frozen=True)
class PlannedBatch:
    model: str
    job_ids: tuple[str, ...]
    estimated_tokens: int


@dataclass
class _Cutter:
    model: str
    limits: BatchLimits
    batches: list[PlannedBatch] = field(default_factory=list)
    _ids: list[str] = field(default_factory=list)
    _tokens: int = 0

    def add(self, job: QueuedJob) -> None:
        would_overflow = (
            len(self._ids) >= self.limits.max_jobs
            or self._tokens + job.estimated_tokens > self.limits.max_tokens
        )
        # A job bigger than the whole token budget still runs, alone.
        if self._ids and would_overflow:
            self.flush()
        self._ids.append(job.id)
        self._tokens += job.estimated_tokens

    def flush(self) -> None:
        if self._ids:
            self.batches.append(PlannedBatch(self.model, tuple(self._ids), self._tokens))
            self._ids, self._tokens = [], 0


def plan_batches(jobs: Iterable[QueuedJob], limits: BatchLimits) -> list[PlannedBatch]:
    """Cut `jobs` into batches: one model per batch, every job in exactly one batch."""
    ordered = sorted(jobs, key=lambda j: (j.priority, j.created_at, j.id))
    cutters: dict[str, _Cutter] = {}
    for job in ordered:
        cutters.setdefault(job.model, _Cutter(job.model, limits)).add(job)
    planned: list[PlannedBatch] = []
    for cutter in cutters.values():
        cutter.flush()
        planned.extend(cutter.batches)
    return planned


@dataclass(frozen=True)
class WindowState:
    """What the runner knows about queued work when it decides whether to close a window."""

    waited_ms: float  # since the window opened (the first queued job was seen)
    queued_jobs: int
    queued_tokens: int
    grew_since_last_look: bool


@dataclass(frozen=True)
class WindowBounds:
    min_ms: int
    max_ms: int


def window_should_close(
    state: WindowState, bounds: WindowBounds, limits: BatchLimits
) -> bool:
    """Close at once when a full batch is waiting; otherwise after `min_ms` if arrivals have
    stopped, and never later than `max_ms` while they keep coming."""
    if state.queued_jobs == 0:
        return False
    if state.queued_jobs >= limits.max_jobs or state.queued_tokens >= limits.max_tokens:
        return True
    if state.waited_ms >= bounds.max_ms:
        return True
    return state.waited_ms >= bounds.min_ms and not state.grew_since_last_look


def models_with_room(
    pending_batches: dict[str, int], models: Sequence[str], max_pending: int
) -> list[str]:
    """Models whose engines are not already backed up with batches nobody runs yet."""
    return [m for m in models if pending_batches.get(m, 0) < max_pending]
