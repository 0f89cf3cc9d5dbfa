"""ledger.output_histogram: the buckets, and what the max_tokens audit reads from them —
percentiles never below the true ones and less than an eighth above, exact totals, a
recommendation never below the true p99 and an exact count of what it would cut."""

from __future__ import annotations

import math
from collections import defaultdict
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.max_tokens_audit import percentile, recommend_max_tokens
from ledger.output_histogram import (
    HistogramRow,
    bucket_of,
    bucket_top,
    bucket_width,
    edge_at_or_above,
    histograms,
    recommend_from_histogram,
)


@given(st.integers(0, 2**31 - 1))
def test_a_count_lies_in_its_bucket_and_the_bucket_is_at_most_an_eighth_wide(
        tokens: int) -> None:
    edge = bucket_of(tokens)
    assert edge < tokens <= bucket_top(edge)
    assert bucket_of(edge + 1) == edge and bucket_of(bucket_top(edge)) == edge
    if tokens <= 16:
        assert bucket_width(edge) == 1
    else:
        assert bucket_width(edge) * 8 <= tokens


def test_the_buckets_named_in_the_docstring() -> None:
    assert [(bucket_of(v), bucket_top(bucket_of(v))) for v in (0, 1, 16, 17, 19, 130, 257)] \
        == [(-1, 0), (0, 1), (15, 16), (16, 18), (18, 20), (128, 144), (256, 288)]
    assert all(bucket_of(e + 1) == e for e in range(16, 129, 16))  # multiples of 16 ...
    assert all(bucket_of(2**k + 1) == 2**k for k in range(4, 30))  # ... and powers of two


@given(st.integers(-1, 2**30))
def test_edge_at_or_above_is_the_smallest_edge_not_below(tokens: int) -> None:
    edge = edge_at_or_above(tokens)
    assert edge >= tokens and bucket_of(edge + 1) == edge
    assert bucket_of(edge) < tokens  # the edge before it is below `tokens`


def _rows(jobs: list[tuple[int, int, bool, int]], split: int) -> list[HistogramRow]:
    """Rollup rows of jobs (output, requested, stopped at length, cost in units), spread
    over `split` days the way the trigger would sum them."""
    groups: dict[tuple[int, int, int], list[tuple[int, int, bool, int]]] = defaultdict(list)
    for i, job in enumerate(jobs):
        groups[(i % split, bucket_of(job[0]), bucket_of(job[1]))].append(job)
    return [HistogramRow(
        tenant="t", feature="f", output_edge=out_edge, requested_edge=req_edge,
        jobs=len(group), length_jobs=sum(1 for g in group if g[2]),
        capped_jobs=0, output_tokens=sum(g[0] for g in group),
        max_output=max(g[0] for g in group), min_requested=min(g[1] for g in group),
        max_requested=max(g[1] for g in group),
        cost_usd=sum((Decimal(g[3]) / 1000 for g in group), Decimal(0)))
        for (_, out_edge, req_edge), group in groups.items()]


JOBS = st.lists(st.tuples(st.integers(0, 5000), st.sampled_from([64, 256, 300, 1000, 4096]),
                          st.booleans(), st.integers(0, 100)), min_size=1, max_size=200)


@settings(deadline=None, max_examples=100)
@given(JOBS, st.integers(1, 4), st.floats(1.0, 2.0))
def test_what_the_audit_reads_from_buckets_against_the_jobs_themselves(
        jobs: list[tuple[int, int, bool, int]], split: int, margin: float) -> None:
    [histogram] = histograms(_rows(jobs, split))
    outputs = sorted(j[0] for j in jobs)
    asked = sorted(j[1] for j in jobs)
    # Totals are exact.
    assert histogram.jobs == len(jobs)
    assert histogram.length_jobs == sum(1 for j in jobs if j[2])
    assert histogram.output_tokens == sum(outputs)
    assert histogram.cost_usd == sum((Decimal(j[3]) / 1000 for j in jobs), Decimal(0))
    assert histogram.max_output() == outputs[-1] and histogram.max_requested() == asked[-1]
    # Percentiles: never below the true one, exact up to 16, less than an eighth above.
    for fraction in (0.5, 0.95, 0.99):
        true, read = percentile(outputs, fraction), histogram.output_percentile(fraction)
        assert true <= read <= max(true, 16) if true <= 16 else true <= read < true * 1.125
    # The requested median: the requests here are few distinct values, one per bucket.
    assert histogram.requested_median() == percentile(asked, 0.5)
    # The recommendation: never below the true p99 (nor the exact recommendation), below
    # the median request, and what it would cut is counted exactly.
    cap = recommend_from_histogram(histogram, margin)
    exact = recommend_max_tokens(percentile(outputs, 0.99), margin)
    if cap is None:
        assert edge_at_or_above(recommend_max_tokens(
            histogram.output_percentile(0.99), margin)) >= percentile(asked, 0.5)
    else:
        assert cap >= exact >= percentile(outputs, 0.99) and cap % 16 == 0
        assert cap < percentile(asked, 0.5)
        assert histogram.beyond(cap) == (sum(1 for o in outputs if o > cap),
                                         sum(o - cap for o in outputs if o > cap))


def test_a_median_request_bucket_of_several_values_reads_its_smallest() -> None:
    # 300 and 310 share a bucket (289-320): the median reads 300, not more than the truth.
    jobs = [(10, 300, False, 1), (10, 310, False, 1), (10, 310, False, 1)]
    [histogram] = histograms(_rows(jobs, 1))
    assert bucket_of(300) == bucket_of(310)
    assert histogram.requested_median() == 300 <= percentile([300, 310, 310], 0.5)


def test_features_come_most_costly_first() -> None:
    rows = [HistogramRow("t", name, 9, 63, 1, 0, 0, 10, 10, 64, 64, Decimal(cost))
            for name, cost in (("cheap", "0.1"), ("dear", "2"), ("mid", "1"))]
    assert [h.feature for h in histograms(rows)] == ["dear", "mid", "cheap"]
    assert math.isclose(float(histograms(rows)[0].cost_usd), 2.0)
