"""coalescer.planning: one window's jobs in, batches out (dedupe, prefix grouping, cuts)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalescer.affinity import assign_workers
from coalescer.planning import BatchLimits, PlanOptions, QueuedJob, WindowPlan, plan_window

T0 = datetime(2024, 1, 1, tzinfo=UTC)
PROPERTY = settings(database=None, deadline=None, max_examples=150)
SYSTEM_A = tuple(range(100, 140))  # 40-token shared prefixes
SYSTEM_B = tuple(range(200, 240))


def job(job_id: str, *, model: str = "m", tokens: int = 10, priority: int = 0, second: int = 0,
        prompt: tuple[int, ...] = (), key: str | None = None, tenant: str = "t",
        deadline_in: float | None = None) -> QueuedJob:
    return QueuedJob(
        id=job_id, model=model, estimated_tokens=tokens, priority=priority,
        created_at=T0 + timedelta(seconds=second), tenant=tenant,
        deadline_at=None if deadline_in is None else T0 + timedelta(seconds=deadline_in),
        single_flight_key=key, prompt_tokens=prompt or (int(job_id.encode().hex(), 16) % 997,),
    )


def plan(jobs: list[QueuedJob], max_jobs: int = 10, max_tokens: int = 1000, *,
         group: bool = True, dedupe: bool = True,
         in_flight: dict[str, str] | None = None) -> WindowPlan:
    options = PlanOptions(BatchLimits(max_jobs, max_tokens), now=T0,
                          group_prefixes=group, single_flight=dedupe)
    return plan_window(jobs, options, in_flight)


def ids(result: WindowPlan) -> list[tuple[str, ...]]:
    return [b.job_ids for b in result.batches]


def test_jobs_sharing_a_prefix_are_grouped_and_consecutive() -> None:
    jobs = [job(f"{'ab'[i % 2]}{i}", second=i, prompt=(SYSTEM_A, SYSTEM_B)[i % 2] + (i,))
            for i in range(6)]
    result = plan(jobs, max_jobs=3)
    assert sorted(ids(result)) == [("a0", "a2", "a4"), ("b1", "b3", "b5")]
    assert {b.shared_prefix_tokens for b in result.batches} == {40}
    assert len({b.prefix_key for b in result.batches}) == 2


def test_without_grouping_jobs_are_cut_in_arrival_order() -> None:
    jobs = [job(f"{'ab'[i % 2]}{i}", second=i, prompt=(SYSTEM_A, SYSTEM_B)[i % 2] + (i,))
            for i in range(6)]
    assert ids(plan(jobs, max_jobs=3, group=False)) == [("a0", "b1", "a2"), ("b3", "a4", "b5")]


def test_a_group_that_fits_is_never_split_even_if_it_arrived_last() -> None:
    singles = [job(f"s{i}", second=i, prompt=(900 + i,) * 20) for i in range(3)]
    group = [job(f"g{i}", second=10 + i, prompt=(*SYSTEM_A, i)) for i in range(4)]
    result = plan(singles + group, max_jobs=4)
    assert ("g0", "g1", "g2", "g3") in ids(result)


def test_a_group_too_big_for_one_batch_splits_at_its_weakest_link() -> None:
    # Two sub-prompts under one system prompt: A+x (3 jobs) and A+y (3 jobs), batch of 4.
    deep_x = [job(f"x{i}", second=i, prompt=SYSTEM_A + (7,) * 30 + (i,)) for i in range(3)]
    deep_y = [job(f"y{i}", second=3 + i, prompt=SYSTEM_A + (8,) * 30 + (i,)) for i in range(3)]
    result = plan(deep_x + deep_y, max_jobs=4)
    assert sorted(ids(result)) == [("x0", "x1", "x2"), ("y0", "y1", "y2")]


def test_a_flat_group_bigger_than_a_batch_fills_consecutive_full_batches() -> None:
    jobs = [job(f"j{i}", second=i, prompt=(*SYSTEM_A, i)) for i in range(7)]
    result = plan(jobs, max_jobs=3)
    assert [len(b) for b in ids(result)] == [3, 3, 1]
    assert len({b.prefix_key for b in result.batches}) == 1


def test_a_shared_prefix_counts_once_against_the_token_budget() -> None:
    # Ten jobs of 50 tokens each, 40 of them the shared system prompt: 500 tokens counted
    # per job, but 50 + 9 x 10 = 140 for the engine, which computes the prefix once.
    group = [job(f"g{i}", tokens=50, second=i, prompt=(*SYSTEM_A, i)) for i in range(10)]
    result = plan(group, max_jobs=10, max_tokens=200)
    assert ids(result) == [tuple(f"g{i}" for i in range(10))]
    assert result.batches[0].estimated_tokens == 140
    assert len(plan(group, max_jobs=10, max_tokens=200, group=False).batches) == 3


def test_tenants_never_share_a_group() -> None:
    jobs = [job(f"{t}{i}", tenant=t, second=i, prompt=(*SYSTEM_A, i))
            for i in range(2) for t in ("p", "q")]
    result = plan(jobs, max_jobs=2)
    assert sorted(ids(result)) == [("p0", "p1"), ("q0", "q1")]
    assert len({b.prefix_key for b in result.batches}) == 2


def test_batches_without_prompt_tokens_prefer_no_single_worker() -> None:
    # An embedding model's jobs carry no tokens: nothing is cached on any worker, so
    # batches placed one at a time on idle workers must not all prefer the same one.
    jobs = [replace(job(f"e{i}", second=i), prompt_tokens=()) for i in range(40)]
    keys = [b.prefix_key for b in plan(jobs, max_jobs=2).batches]
    assert len(set(keys)) == len(keys) == 20
    chosen = [assign_workers([key], ["w1", "w2"], {}, 0.25)[0] for key in keys]
    assert set(chosen) == {"w1", "w2"}


def test_identical_deterministic_jobs_run_once_and_fan_out() -> None:
    jobs = [job("a", key="k1", second=0), job("b", key="k1", second=1),
            job("c", key=None, second=2), job("d", key=None, second=3)]
    result = plan(jobs)
    assert ids(result) == [("a", "c", "d")] or sorted(ids(result)[0]) == ["a", "c", "d"]
    assert result.followers == {"b": "a"}
    assert result.batches[0].follower_ids == ("b",)


def test_copies_of_an_in_flight_request_join_it() -> None:
    result = plan([job("new", key="k1"), job("other", key="k2")], in_flight={"k1": "old"})
    assert result.joined_in_flight == {"new": "old"}
    assert ids(result) == [("other",)]


def test_dedupe_off_runs_every_copy() -> None:
    result = plan([job("a", key="k"), job("b", key="k")], dedupe=False, in_flight={"k": "x"})
    assert sorted(ids(result)[0]) == ["a", "b"]
    assert result.followers == {} and result.joined_in_flight == {}


def test_the_leader_is_the_most_urgent_copy() -> None:
    result = plan([job("late", key="k", second=5), job("early", key="k", priority=-1, second=9)])
    assert result.followers == {"late": "early"}


def test_near_deadline_jobs_come_first_then_priority_then_arrival() -> None:
    jobs = [job("old", second=0, prompt=(1,) * 20), job("vip", priority=-5, second=5,
                                                          prompt=(2,) * 20),
            job("due", second=9, deadline_in=30, prompt=(3,) * 20),
            job("later", second=1, deadline_in=3600, prompt=(4,) * 20)]
    result = plan(jobs, max_jobs=1)
    assert [b[0] for b in ids(result)] == ["due", "vip", "old", "later"]


def test_models_never_mix() -> None:
    jobs = [job(f"{m}{i}", model=m, second=i, prompt=(*SYSTEM_A, i))
            for i in range(2) for m in ("x", "y")]
    result = plan(jobs)
    assert sorted((b.model, b.job_ids) for b in result.batches) == [
        ("x", ("x0", "x1")), ("y", ("y0", "y1"))]


def test_an_oversized_job_runs_alone() -> None:
    result = plan([job("big", tokens=5000), job("a", second=1), job("b", second=2)],
                  max_tokens=100)
    assert ("big",) in ids(result)
    assert all(len(b) == 1 or "big" not in b for b in ids(result))


# ---- properties -----------------------------------------------------------------------

PREFIXES = [(), SYSTEM_A, SYSTEM_B, SYSTEM_A + (5,) * 20]
MODELS, TENANTS = ("alpha", "beta"), ("t1", "t2")


@st.composite
def windows(draw: st.DrawFn) -> tuple[list[QueuedJob], BatchLimits, dict[str, str]]:
    count = draw(st.integers(min_value=0, max_value=40))
    jobs = []
    for i in range(count):
        prefix = draw(st.sampled_from(PREFIXES))
        suffix = tuple(draw(st.lists(st.integers(0, 3), min_size=1, max_size=3)))
        sampled = draw(st.booleans())
        model, tenant = draw(st.sampled_from(MODELS)), draw(st.sampled_from(TENANTS))
        jobs.append(QueuedJob(
            id=f"j{i:03d}",
            model=model,
            estimated_tokens=draw(st.integers(min_value=0, max_value=300)),
            priority=draw(st.integers(min_value=-2, max_value=2)),
            created_at=T0 + timedelta(seconds=draw(st.integers(0, 5))),
            tenant=tenant,
            deadline_at=draw(st.none() | st.just(T0 + timedelta(seconds=10))),
            # The key stands for the whole request: equal prompts share it unless sampled.
            single_flight_key=None if sampled else f"{tenant}|{model}|{prefix}{suffix}",
            prompt_tokens=prefix + suffix,
        ))
    limits = BatchLimits(max_jobs=draw(st.integers(1, 8)), max_tokens=draw(st.integers(1, 900)))
    in_flight = draw(st.dictionaries(st.sampled_from([f"t1|alpha|{p}{(0,)}" for p in PREFIXES]),
                                     st.just("flying"), max_size=2))
    return draw(st.permutations(jobs)), limits, in_flight


def common_prefix(first: QueuedJob, second: QueuedJob) -> int:
    if first.tenant != second.tenant:
        return 0
    length = 0
    for a, b in zip(first.prompt_tokens, second.prompt_tokens, strict=False):
        if a != b:
            break
        length += 1
    return length


def _plan(case: tuple[list[QueuedJob], BatchLimits, dict[str, str]]) -> WindowPlan:
    jobs, limits, in_flight = case
    return plan_window(jobs, PlanOptions(limits, now=T0), in_flight)


@PROPERTY
@given(windows())
def test_every_job_is_placed_exactly_once(
    case: tuple[list[QueuedJob], BatchLimits, dict[str, str]],
) -> None:
    result = _plan(case)
    placed = Counter(j for b in result.batches for j in b.job_ids)
    placed.update(list(result.followers))
    placed.update(list(result.joined_in_flight))
    assert placed == Counter(j.id for j in case[0])
    in_batches = Counter(f for b in result.batches for f in b.follower_ids)
    assert in_batches == Counter(list(result.followers))
    assert all(b.job_ids for b in result.batches)


@PROPERTY
@given(windows())
def test_batches_respect_bounds_unless_one_job_alone_is_too_big(
    case: tuple[list[QueuedJob], BatchLimits, dict[str, str]],
) -> None:
    jobs, limits, _ = case
    by_id = {j.id: j for j in jobs}
    for batch in _plan(case).batches:
        assert len(batch.job_ids) <= limits.max_jobs
        # A shared prefix counts once: never more than the jobs' own estimates, never less
        # than those estimates minus every prefix a job shares with the job before it.
        jobs_in_order = [by_id[j] for j in batch.job_ids]
        full = sum(j.estimated_tokens for j in jobs_in_order)
        shared = sum(min(later.estimated_tokens, common_prefix(earlier, later))
                     for earlier, later in pairwise(jobs_in_order))
        assert full - shared <= batch.estimated_tokens <= full
        assert {by_id[j].model for j in batch.job_ids} == {batch.model}
        if batch.estimated_tokens > limits.max_tokens:
            assert len(batch.job_ids) == 1


@PROPERTY
@given(windows())
def test_jobs_sharing_a_prefix_are_contiguous_within_a_batch(
    case: tuple[list[QueuedJob], BatchLimits, dict[str, str]],
) -> None:
    by_id = {j.id: j for j in case[0]}
    for batch in _plan(case).batches:
        for prefix in PREFIXES[1:]:
            positions = [i for i, j in enumerate(batch.job_ids)
                         if by_id[j].prompt_tokens[:len(prefix)] == prefix]
            for tenant in ("t1", "t2"):
                mine = [i for i in positions if by_id[batch.job_ids[i]].tenant == tenant]
                assert mine == list(range(mine[0], mine[0] + len(mine))) if mine else True


@PROPERTY
@given(windows())
def test_dedupe_only_merges_identical_deterministic_requests(
    case: tuple[list[QueuedJob], BatchLimits, dict[str, str]],
) -> None:
    jobs, _, in_flight = case
    by_id = {j.id: j for j in jobs}
    result = _plan(case)
    for follower, leader in result.followers.items():
        assert by_id[follower].single_flight_key is not None
        assert by_id[follower].single_flight_key == by_id[leader].single_flight_key
        assert by_id[follower].model == by_id[leader].model
    for follower in result.joined_in_flight:
        assert by_id[follower].single_flight_key in in_flight
    leaders = [j for b in result.batches for j in b.job_ids]
    keys = [by_id[j].single_flight_key for j in leaders if by_id[j].single_flight_key]
    assert len(keys) == len(set(keys))


@PROPERTY
@given(windows())
def test_a_prefix_group_that_fits_one_batch_is_never_split(
    case: tuple[list[QueuedJob], BatchLimits, dict[str, str]],
) -> None:
    jobs, limits, _ = case
    result = _plan(case)
    leaders = {j for b in result.batches for j in b.job_ids}
    by_id = {j.id: j for j in jobs}
    for prefix in PREFIXES[1:]:
        for tenant in ("t1", "t2"):
            for model in ("alpha", "beta"):
                group = [by_id[j] for j in leaders if by_id[j].tenant == tenant
                         and by_id[j].model == model
                         and by_id[j].prompt_tokens[:len(prefix)] == prefix]
                tokens = sum(j.estimated_tokens for j in group)
                if group and len(group) <= limits.max_jobs and tokens <= limits.max_tokens:
                    holding = [b for b in result.batches
                               if any(j.id in b.job_ids for j in group)]
                    assert len(holding) == 1


@pytest.mark.parametrize("count", [1, 100])
def test_planning_accepts_a_generator(count: int) -> None:
    result = plan_window((job(f"j{i}", second=i) for i in range(count)),
                         PlanOptions(BatchLimits(64, 10**6), now=T0))
    assert sum(len(b.job_ids) for b in result.batches) == count
