"""coalescer.windows: when a window closes, and how many batches each model may take."""

from __future__ import annotations

import pytest

from coalescer.planning import BatchLimits
from coalescer.windows import WindowBounds, WindowState, batch_room, window_should_close

BOUNDS = WindowBounds(min_ms=50, max_ms=100)
LIMITS = BatchLimits(max_jobs=4, max_tokens=1000)


@pytest.mark.parametrize(
    ("waited_ms", "jobs", "tokens", "grew", "expected"),
    [
        pytest.param(10_000, 0, 0, False, False, id="nothing-queued-never-closes"),
        pytest.param(0, 4, 40, True, True, id="full-by-job-count-closes-at-once"),
        pytest.param(0, 1, 1000, True, True, id="full-by-tokens-closes-at-once"),
        pytest.param(0, 3, 999, True, False, id="almost-full-keeps-waiting"),
        pytest.param(10, 1, 10, False, False, id="before-min-keeps-waiting"),
        pytest.param(50, 1, 10, False, True, id="at-min-and-quiet-closes"),
        pytest.param(70, 1, 10, True, False, id="between-min-and-max-still-growing"),
        pytest.param(99.9, 1, 10, True, False, id="just-before-max-still-growing"),
        pytest.param(100, 1, 10, True, True, id="at-max-closes-even-while-growing"),
        pytest.param(5000, 2, 20, True, True, id="past-max-closes"),
    ],
)
def test_window_should_close(
    waited_ms: float, jobs: int, tokens: int, grew: bool, expected: bool
) -> None:
    state = WindowState(
        waited_ms=waited_ms, queued_jobs=jobs, queued_tokens=tokens, grew_since_last_look=grew
    )
    assert window_should_close(state, BOUNDS, LIMITS) is expected


def test_a_job_near_its_deadline_closes_the_window_at_once() -> None:
    state = WindowState(waited_ms=0, queued_jobs=1, queued_tokens=10,
                        grew_since_last_look=True, urgent_jobs=1)
    assert window_should_close(state, BOUNDS, LIMITS)


@pytest.mark.parametrize(
    ("pending", "workers", "models", "per_worker", "expected"),
    [
        pytest.param({}, {}, ["a", "b"], 1, {"a": 1, "b": 1}, id="nothing-pending"),
        pytest.param({"a": 1}, {}, ["a", "b"], 1, {"b": 1}, id="backed-up-model-dropped"),
        pytest.param({"a": 1}, {"a": 2}, ["a"], 1, {"a": 1}, id="two-workers-double-room"),
        pytest.param({"a": 4}, {"a": 2}, ["a"], 2, {}, id="every-worker-backed-up"),
        pytest.param({}, {"a": 3}, ["a"], 2, {"a": 6}, id="room-per-worker"),
        pytest.param({"z": 9}, {}, ["c"], 1, {"c": 1}, id="ignores-other-models"),
        pytest.param({}, {}, [], 1, {}, id="no-models"),
    ],
)
def test_batch_room(pending: dict[str, int], workers: dict[str, int], models: list[str],
                    per_worker: int, expected: dict[str, int]) -> None:
    assert batch_room(pending, workers, models, per_worker) == expected
