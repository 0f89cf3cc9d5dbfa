"""Radix-order prefix runs, the single-flight key, and bounded-load affinity."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalescer.affinity import assign_workers, choose_worker, load_cap, preference_order
from coalescer.prefix_groups import pack_tokens, prefix_runs, shared_prefix_tokens
from coalescer.single_flight import single_flight_key

PROPERTY = settings(database=None, deadline=None, max_examples=200)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [((), (), 0), ((1, 2, 3), (1, 2, 3), 3), ((1, 2, 3), (1, 2), 2), ((1, 2), (2, 1), 0),
     ((7,) * 40 + (1,), (7,) * 40 + (2,), 40), ((256,), (1,), 0), ((1, 256), (1, 257), 1)],
)
def test_shared_prefix_tokens(a: tuple[int, ...], b: tuple[int, ...], expected: int) -> None:
    assert shared_prefix_tokens(pack_tokens(a), pack_tokens(b)) == expected


@PROPERTY
@given(st.lists(st.integers(0, 2**32 - 1), max_size=30),
       st.lists(st.integers(0, 2**32 - 1), max_size=30))
def test_packed_order_is_token_order_and_lcp_is_exact(a: list[int], b: list[int]) -> None:
    assert (pack_tokens(a) < pack_tokens(b)) == (a < b)
    expected = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                    min(len(a), len(b)))
    assert shared_prefix_tokens(pack_tokens(a), pack_tokens(b)) == expected


def test_runs_follow_the_radix_tree_and_split_at_the_root() -> None:
    prompts = {"a1": (1,) * 20 + (5,) * 20 + (1,), "b1": (2,) * 20 + (3,),
               "a2": (1,) * 20 + (6,) * 20 + (2,), "a3": (1,) * 20 + (5,) * 20 + (2,),
               "lone": (9,)}
    runs = prefix_runs(list(prompts), lambda k: ("t", pack_tokens(prompts[k])), 16)
    assert [r.items for r in runs] == [("a1", "a3", "a2"), ("b1",), ("lone",)]
    assert runs[0].links == (40, 20) and runs[0].shared_tokens == 20
    assert [p.items for p in runs[0].split_at_weakest_links()] == [("a1", "a3"), ("a2",)]
    flat = prefix_runs(["x", "y"], lambda k: ("t", pack_tokens((4,) * 30 + (len(k),))), 16)
    assert flat[0].split_at_weakest_links() == [flat[0]]


def test_runs_never_cross_namespaces() -> None:
    runs = prefix_runs(["p", "q"], lambda k: (k, pack_tokens((1,) * 64)), 16)
    assert [r.items for r in runs] == [("p",), ("q",)]


REQUEST = {"messages": [{"role": "user", "content": "hi"}],
           "sampling": {"max_tokens": 8, "temperature": 0.0, "top_p": 1.0, "stop": [],
                        "seed": None}}


def _with(**sampling: object) -> dict[str, object]:
    return {**REQUEST, "sampling": {**REQUEST["sampling"], **sampling}}  # type: ignore[dict-item]


def test_single_flight_key_covers_everything_that_changes_the_answer() -> None:
    base = single_flight_key("t", "m", REQUEST)
    assert base is not None and base == single_flight_key("t", "m", dict(REQUEST))
    variants = [single_flight_key("u", "m", REQUEST), single_flight_key("t", "n", REQUEST),
                single_flight_key("t", "m", _with(max_tokens=9)),
                single_flight_key("t", "m", _with(stop=["x"])),
                single_flight_key("t", "m", _with(top_p=0.5)),
                # A copy that wants logprobs must not be answered by a run without them.
                single_flight_key("t", "m", _with(logprobs=True)),
                single_flight_key("t", "m", {**REQUEST, "messages": [
                    {"role": "user", "content": "hi "}]})]
    assert base not in variants and len(set(variants)) == len(variants)


def test_sampled_requests_have_no_key_unless_seeded() -> None:
    assert single_flight_key("t", "m", _with(temperature=0.7)) is None
    seeded = single_flight_key("t", "m", _with(temperature=0.7, seed=3))
    assert seeded is not None and seeded != single_flight_key("t", "m", _with(temperature=0.7,
                                                                                 seed=4))


def test_preference_order_is_stable_when_a_worker_leaves() -> None:
    workers = [f"w{i}" for i in range(5)]
    keys = [f"prefix-{i}" for i in range(200)]
    before = {k: preference_order(k, workers)[0] for k in keys}
    after = {k: preference_order(k, workers[:-1])[0] for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert moved and all(before[k] == "w4" for k in moved)


@pytest.mark.parametrize(("total", "workers", "epsilon", "expected"),
                         [(0, 2, 0.25, 1), (1, 2, 0.25, 2), (3, 2, 0.25, 3), (9, 3, 0.0, 4)])
def test_load_cap(total: int, workers: int, epsilon: float, expected: int) -> None:
    assert load_cap(total, workers, epsilon) == expected


def test_a_hot_prefix_spills_once_its_worker_reaches_the_cap() -> None:
    favourite, second = preference_order("hot", ["a", "b"])
    chosen = assign_workers(["hot"] * 8, ["a", "b"], {}, epsilon=0.25)
    counts = Counter(chosen)
    assert chosen[0] == favourite and counts[favourite] > counts[second] > 0
    assert counts[favourite] <= load_cap(7, 2, 0.25)


def test_no_workers_means_the_shared_queue() -> None:
    assert choose_worker("k", [], {}, 0.25) is None


@PROPERTY
@given(st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=60),
       st.integers(1, 5), st.sampled_from([0.0, 0.25, 1.0]))
def test_no_worker_ever_exceeds_the_bound(keys: list[str], n: int, epsilon: float) -> None:
    workers = [f"w{i}" for i in range(n)]
    loads: Counter[str] = Counter()
    for key in keys:
        worker = choose_worker(key, workers, loads, epsilon)
        assert worker is not None
        assert loads[worker] + 1 <= load_cap(sum(loads.values()), n, epsilon)
        loads[worker] += 1
