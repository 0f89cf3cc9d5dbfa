"""coalescer.planning: cutting queued jobs into batches, and when a window closes."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalescer.planning import (
    BatchLimits,
    PlannedBatch,
    QueuedJob,
    WindowBounds,
    WindowState,
    models_with_room,
    plan_batches,
    window_should_close,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)
PROPERTY = settings(database=None, deadline=None, max_examples=300)


def job(
    job_id: str, model: str = "m", tokens: int = 10, priority: int = 0, second: int = 0
) -> QueuedJob:
    return QueuedJob(job_id, model, tokens, priority, T0 + timedelta(seconds=second))


def shape(batches: list[PlannedBatch]) -> list[tuple[str, tuple[str, ...], int]]:
    return [(b.model, b.job_ids, b.estimated_tokens) for b in batches]


@pytest.mark.parametrize(
    ("jobs", "limits", "expected"),
    [
        pytest.param([], BatchLimits(4, 100), [], id="empty"),
        pytest.param(
            [job("a", second=0), job("b", second=1), job("c", second=2)],
            BatchLimits(2, 1000),
            [("m", ("a", "b"), 20), ("m", ("c",), 10)],
            id="cut-by-job-count",
        ),
        pytest.param(
            [job("a", tokens=40, second=0), job("b", tokens=40, second=1),
             job("c", tokens=40, second=2)],
            BatchLimits(10, 100),
            [("m", ("a", "b"), 80), ("m", ("c",), 40)],
            id="cut-by-tokens",
        ),
        pytest.param(
            [job("a", tokens=50, second=0), job("b", tokens=50, second=1)],
            BatchLimits(10, 100),
            [("m", ("a", "b"), 100)],
            id="exact-token-fit",
        ),
        pytest.param(
            [job("a", tokens=60, second=0), job("b", tokens=41, second=1)],
            BatchLimits(10, 100),
            [("m", ("a",), 60), ("m", ("b",), 41)],
            id="one-token-over-cuts",
        ),
        pytest.param(
            [job("a", tokens=10, second=0), job("big", tokens=500, second=1),
             job("c", tokens=10, second=2)],
            BatchLimits(10, 100),
            [("m", ("a",), 10), ("m", ("big",), 500), ("m", ("c",), 10)],
            id="oversized-job-runs-alone",
        ),
        pytest.param(
            [job("big", tokens=500, second=0), job("a", second=1), job("b", second=2)],
            BatchLimits(10, 100),
            [("m", ("big",), 500), ("m", ("a", "b"), 20)],
            id="oversized-job-first",
        ),
        pytest.param(
            [job("x1", model="x", second=0), job("y1", model="y", second=1),
             job("x2", model="x", second=2), job("y2", model="y", second=3)],
            BatchLimits(10, 1000),
            [("x", ("x1", "x2"), 20), ("y", ("y1", "y2"), 20)],
            id="one-model-per-batch",
        ),
        pytest.param(
            [job("late", second=5), job("urgent", priority=-5, second=9),
             job("early", second=1)],
            BatchLimits(10, 1000),
            [("m", ("urgent", "early", "late"), 30)],
            id="priority-then-arrival",
        ),
        pytest.param(
            [job("b", second=3), job("a", second=3)],
            BatchLimits(10, 1000),
            [("m", ("a", "b"), 20)],
            id="id-breaks-ties",
        ),
    ],
)
def test_plan_batches_table(
    jobs: list[QueuedJob],
    limits: BatchLimits,
    expected: list[tuple[str, tuple[str, ...], int]],
) -> None:
    assert shape(plan_batches(jobs, limits)) == expected


def test_plan_batches_accepts_a_generator() -> None:
    planned = plan_batches((job(str(i), second=i) for i in range(3)), BatchLimits(2, 1000))
    assert [b.job_ids for b in planned] == [("0", "1"), ("2",)]


@st.composite
def queues(draw: st.DrawFn) -> tuple[list[QueuedJob], BatchLimits]:
    count = draw(st.integers(min_value=0, max_value=40))
    jobs = [
        QueuedJob(
            id=f"j{i:03d}",
            model=draw(st.sampled_from(["alpha", "beta", "gamma"])),
            estimated_tokens=draw(st.integers(min_value=0, max_value=600)),
            priority=draw(st.integers(min_value=-2, max_value=2)),
            created_at=T0 + timedelta(seconds=draw(st.integers(min_value=0, max_value=5))),
        )
        for i in range(count)
    ]
    limits = BatchLimits(
        max_jobs=draw(st.integers(min_value=1, max_value=8)),
        max_tokens=draw(st.integers(min_value=1, max_value=500)),
    )
    return draw(st.permutations(jobs)), limits


@PROPERTY
@given(queues())
def test_every_job_lands_in_exactly_one_batch(case: tuple[list[QueuedJob], BatchLimits]) -> None:
    jobs, limits = case
    planned = plan_batches(jobs, limits)
    placed = Counter(j for b in planned for j in b.job_ids)
    assert placed == Counter(j.id for j in jobs)
    assert all(b.job_ids for b in planned)


@PROPERTY
@given(queues())
def test_each_batch_holds_one_model_and_sums_its_tokens(
    case: tuple[list[QueuedJob], BatchLimits],
) -> None:
    jobs, limits = case
    by_id = {j.id: j for j in jobs}
    for batch in plan_batches(jobs, limits):
        assert {by_id[j].model for j in batch.job_ids} == {batch.model}
        assert batch.estimated_tokens == sum(by_id[j].estimated_tokens for j in batch.job_ids)


@PROPERTY
@given(queues())
def test_batches_respect_limits_unless_one_job_alone_is_too_big(
    case: tuple[list[QueuedJob], BatchLimits],
) -> None:
    jobs, limits = case
    for batch in plan_batches(jobs, limits):
        assert len(batch.job_ids) <= limits.max_jobs
        if batch.estimated_tokens > limits.max_tokens:
            assert len(batch.job_ids) == 1


@PROPERTY
@given(queues())
def test_order_within_a_model_follows_priority_then_arrival(
    case: tuple[list[QueuedJob], BatchLimits],
) -> None:
    jobs, limits = case
    by_id = {j.id: j for j in jobs}
    for model in {j.model for j in jobs}:
        placed = [
            by_id[j] for b in plan_batches(jobs, limits) if b.model == model for j in b.job_ids
        ]
        keys = [(j.priority, j.created_at) for j in placed]
        assert keys == sorted(keys)
        assert len(placed) == sum(1 for j in jobs if j.model == model)


@PROPERTY
@given(queues())
def test_a_batch_is_only_cut_when_the_next_job_would_not_fit(
    case: tuple[list[QueuedJob], BatchLimits],
) -> None:
    jobs, limits = case
    by_id = {j.id: j for j in jobs}
    planned = plan_batches(jobs, limits)
    for model in {b.model for b in planned}:
        mine = [b for b in planned if b.model == model]
        for batch, following in pairwise(mine):
            next_tokens = by_id[following.job_ids[0]].estimated_tokens
            assert (
                len(batch.job_ids) >= limits.max_jobs
                or batch.estimated_tokens + next_tokens > limits.max_tokens
            )


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


@pytest.mark.parametrize(
    ("pending", "models", "max_pending", "expected"),
    [
        pytest.param({}, ["a", "b"], 1, ["a", "b"], id="nothing-pending"),
        pytest.param({"a": 1}, ["a", "b"], 1, ["b"], id="backed-up-model-dropped"),
        pytest.param({"a": 0, "b": 3}, ["a", "b"], 1, ["a"], id="zero-pending-has-room"),
        pytest.param({"a": 1}, ["a", "b"], 2, ["a", "b"], id="below-a-higher-limit"),
        pytest.param({"a": 2}, ["a"], 2, [], id="at-limit-has-no-room"),
        pytest.param({"z": 9}, ["c", "a"], 1, ["c", "a"], id="keeps-order-ignores-others"),
        pytest.param({}, [], 1, [], id="no-models"),
    ],
)
def test_models_with_room(
    pending: dict[str, int], models: list[str], max_pending: int, expected: list[str]
) -> None:
    assert models_with_room(pending, models, max_pending) == expected
