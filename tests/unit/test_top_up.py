"""coalescer.planning.top_up: a batch waiting for its engine grows with queued jobs, and
the batch budget counts prompts, not output allowances."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from coalescer.planning import BatchLimits, PlanOptions, QueuedJob, plan_window, top_up

T0 = datetime(2024, 1, 1, tzinfo=UTC)
SYSTEM_A = tuple(range(100, 140))  # 40-token shared prefixes
SYSTEM_B = tuple(range(200, 240))


def job(job_id: str, prompt: tuple[int, ...], *, second: int = 0, key: str | None = None,
        output: int = 0, tenant: str = "t") -> QueuedJob:
    return QueuedJob(id=job_id, model="m", estimated_tokens=len(prompt) + output,
                     priority=0, created_at=T0 + timedelta(seconds=second), tenant=tenant,
                     single_flight_key=key, prompt_tokens=prompt, output_tokens=output)


def options(max_jobs: int = 10, max_tokens: int = 10_000, *, group: bool = True,
            dedupe: bool = True) -> PlanOptions:
    return PlanOptions(BatchLimits(max_jobs, max_tokens), now=T0, group_prefixes=group,
                       single_flight=dedupe)


def test_arrivals_join_the_waiting_batch_in_radix_order() -> None:
    members = [job("a1", (*SYSTEM_A, 1)), job("b1", (*SYSTEM_B, 1))]
    queued = [job("b2", (*SYSTEM_B, 2), second=5), job("a2", (*SYSTEM_A, 2), second=6)]
    grown = top_up(members, queued, options())
    assert grown.job_ids == ("a1", "a2", "b1", "b2")  # each shared prefix side by side
    assert set(grown.added) == {"a2", "b2"}
    # Each 40-token prefix counted once: 41 + 1 + 41 + 1.
    assert grown.estimated_tokens == 84


def test_copies_join_their_leader_in_the_batch_or_among_the_arrivals() -> None:
    members = [job("a1", (*SYSTEM_A, 1), key="k1")]
    queued = [job("copy-of-a1", (*SYSTEM_A, 1), second=3, key="k1"),
              job("b1", (*SYSTEM_B, 1), second=4, key="k2"),
              job("copy-of-b1", (*SYSTEM_B, 1), second=5, key="k2")]
    grown = top_up(members, queued, options(), {"k1": "a1"})
    assert grown.job_ids == ("a1", "b1")
    assert grown.followers == {"copy-of-b1": "b1"}
    assert grown.joined_in_flight == {"copy-of-a1": "a1"}
    assert grown.taken == {"b1", "copy-of-b1", "copy-of-a1"}


def test_a_run_that_does_not_fit_stays_queued_whole_and_smaller_ones_still_join() -> None:
    members = [job(f"m{i}", (900 + i,) * 20) for i in range(6)]
    big_run = [job(f"a{i}", (*SYSTEM_A, i), second=1) for i in range(5)]
    single = job("s", (950,) * 20, second=2)
    grown = top_up(members, [*big_run, single], options(max_jobs=8))
    assert grown.added == ("s",)
    assert len(grown.job_ids) == 7


def test_the_token_budget_bounds_the_grown_batch() -> None:
    members = [job("m", (1,) * 60)]
    queued = [job("x", (2,) * 30, second=1), job("y", (3,) * 50, second=2)]
    grown = top_up(members, queued, options(max_tokens=100))
    assert grown.added == ("x",)  # y would bring the batch to 140 tokens
    assert grown.estimated_tokens == 90


def test_a_full_batch_takes_nothing_but_copies_of_its_jobs() -> None:
    members = [job(f"m{i}", (900 + i,) * 5, key=f"k{i}") for i in range(3)]
    queued = [job("new", (7,) * 5, second=1), job("copy", (900,) * 5, second=2, key="k0")]
    grown = top_up(members, queued, options(max_jobs=3), {"k0": "m0"})
    assert grown.added == ()
    assert grown.joined_in_flight == {"copy": "m0"}
    assert grown.job_ids == tuple(m.id for m in members)


def test_without_grouping_arrivals_follow_the_members_in_urgency_order() -> None:
    members = [job("b1", (*SYSTEM_B, 1))]
    queued = [job("late", (*SYSTEM_A, 2), second=9), job("early", (*SYSTEM_A, 1), second=1)]
    grown = top_up(members, queued, options(group=False))
    assert grown.job_ids == ("b1", "early", "late")


def test_output_allowances_do_not_count_against_the_batch_budget() -> None:
    # 40 jobs of ~60 prompt tokens that may each write 1,024 tokens: vLLM admits them as
    # its KV cache frees, so they go to the engine as one call, not as several.
    jobs = [job(f"j{i}", SYSTEM_A + (i,) * 20, second=i, output=1024) for i in range(40)]
    plan = plan_window(jobs, options(max_jobs=256, max_tokens=12_000))
    assert [len(b.job_ids) for b in plan.batches] == [40]
    assert plan.batches[0].estimated_tokens == 40 + 40 * 20
    # The prompts themselves still count: a budget below them cuts the work.
    assert len(plan_window(jobs, options(max_jobs=256, max_tokens=400)).batches) > 1


@st.composite
def waiting_and_queued(draw: st.DrawFn) -> tuple[list[QueuedJob], list[QueuedJob]]:
    prefixes = [SYSTEM_A, SYSTEM_B, ()]

    def some(prefix: str, count: int) -> list[QueuedJob]:
        return [job(f"{prefix}{i}", draw(st.sampled_from(prefixes)) + (draw(
                    st.integers(0, 5)),) * draw(st.integers(1, 30)),
                    second=draw(st.integers(0, 50)),
                    key=draw(st.sampled_from([None, "k1", "k2", "k3"])),
                    tenant=draw(st.sampled_from(["t", "u"])))
                for i in range(count)]

    return some("m", draw(st.integers(0, 6))), some("q", draw(st.integers(0, 12)))


@settings(database=None, deadline=None, max_examples=150)
@given(waiting_and_queued(), st.integers(1, 10), st.integers(1, 400), st.booleans(),
       st.booleans())
def test_every_queued_job_is_placed_at_most_once_and_members_stay(
        drawn: tuple[list[QueuedJob], list[QueuedJob]], max_jobs: int, max_tokens: int,
        group: bool, dedupe: bool) -> None:
    members, queued = drawn
    # The members' own leaders are in flight: copies of them join them.
    in_flight = {m.single_flight_key: m.id for m in members if m.single_flight_key}
    grown = top_up(members, queued, options(max_jobs, max_tokens, group=group,
                                            dedupe=dedupe), in_flight)
    queued_ids = {q.id for q in queued}
    placed = [*grown.added, *grown.followers, *grown.joined_in_flight]
    assert len(placed) == len(set(placed)) and set(placed) <= queued_ids
    assert set(grown.job_ids) == {m.id for m in members} | set(grown.added)
    assert len(grown.job_ids) == len(set(grown.job_ids))
    if grown.added:  # grown only within the limits
        assert len(grown.job_ids) <= max_jobs and grown.estimated_tokens <= max_tokens
    assert set(grown.followers.values()) <= set(grown.added)
    if not dedupe:
        assert not grown.followers and not grown.joined_in_flight
