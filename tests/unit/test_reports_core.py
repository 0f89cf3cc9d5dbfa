"""The pure core of reports and audits: groups add up to the total exactly whatever the
rows, the max_tokens recommendation and its saving, retry-storm windows, and the per-feature
cap applied to a job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intake.max_tokens_caps import NO_CAPS, JobCaps, apply_caps, feature_of
from ledger.attribution import MECHANISMS
from ledger.cost_report import (
    GROUPINGS,
    RollupRow,
    Usage,
    compare,
    group,
    money_columns,
    rollup_usage,
    top_drivers,
    total,
)
from ledger.max_tokens_audit import (
    FeatureOutputs,
    audit_line,
    percentile,
    recommend_max_tokens,
)
from ledger.retry_storms import Send, is_key_storm, most_in_window, request_storm
from ledger.savings import SavingsTotals
from models.submissions import NewJob

money = st.decimals(min_value=0, max_value=Decimal("1000"), places=10, allow_nan=False,
                    allow_infinity=False)


@st.composite
def rows(draw: st.DrawFn) -> RollupRow:
    cost = draw(money)
    savings = {f"saving_{m}_usd": draw(money) for m in MECHANISMS}
    unexplained = draw(st.decimals(min_value=-10, max_value=10, places=10))
    sums = {"cost_usd": cost, "list_cost_usd": draw(money),
            "naive_cost_usd": cost + sum(savings.values()) + unexplained,
            "unexplained_usd": unexplained, **savings}
    jobs = draw(st.integers(1, 1000))
    usage = rollup_usage(jobs=jobs, requests=jobs, length_jobs=draw(st.integers(0, jobs)),
                         capped_jobs=0, failed_billed=0,
                         input_tokens=draw(st.integers(0, 10**6)), cached_tokens=0,
                         output_tokens=draw(st.integers(0, 10**6)), engine_seconds=1.0,
                         served={"engine": jobs}, money=sums)
    keys = {"tenant": draw(st.sampled_from(["a", "b"])),
            "model": draw(st.sampled_from(["small", "large"])),
            "feature": draw(st.sampled_from(["", "chat", "tags"])),
            "day": draw(st.sampled_from(["2026-01-01", "2026-01-02"]))}
    return RollupRow(keys, usage)


@settings(deadline=None)  # a loaded machine is slow, not wrong
@given(st.lists(rows(), max_size=30), st.sampled_from(GROUPINGS))
def test_groups_add_up_to_the_total_to_the_last_digit(found: list[RollupRow],
                                                      grouping: str) -> None:
    whole = total(found)
    lines = group(found, grouping)
    assert sum((line.usage.cost_usd for line in lines), Decimal(0)) == whole.cost_usd
    for column in money_columns():
        mechanism = column.removeprefix("saving_").removesuffix("_usd")
        if mechanism in MECHANISMS:
            assert sum((line.usage.savings.savings[mechanism] for line in lines),
                       Decimal(0)) == whole.savings.savings[mechanism]
    assert sum(line.usage.requests for line in lines) == whole.requests
    # ... and the saving is still split exactly: naive - cost = mechanisms + unexplained
    assert whole.savings.naive_cost_usd - whole.cost_usd == sum(
        whole.savings.savings.values(), Decimal(0)) + whole.savings.unexplained_usd
    assert len({line.key for line in lines}) == len(lines)


def test_days_are_in_date_order_and_the_rest_costliest_first() -> None:
    def row(day: str, feature: str, cost: str) -> RollupRow:
        usage = rollup_usage(jobs=1, requests=1, length_jobs=0, capped_jobs=0,
                             failed_billed=0, input_tokens=1, cached_tokens=0,
                             output_tokens=1, engine_seconds=0.0, served={},
                             money={"cost_usd": Decimal(cost), "naive_cost_usd": Decimal(cost)})
        return RollupRow({"day": day, "feature": feature, "tenant": "t", "model": "m"}, usage)

    found = [row("2026-01-02", "b", "3"), row("2026-01-01", "a", "1"),
             row("2026-01-01", "b", "1")]
    assert [line.key for line in group(found, "day")] == ["2026-01-01", "2026-01-02"]
    assert [(line.key, line.usage.cost_usd) for line in group(found, "feature")] == [
        ("b", Decimal(4)), ("a", Decimal(1))]
    [top] = top_drivers(found, 1)
    assert (top.feature, top.usage.cost_usd, top.share) == ("b", Decimal(4), 0.8)


def test_cost_per_request_tokens_per_dollar_and_the_comparison() -> None:
    baseline = Usage(jobs=10, requests=10, input_tokens=900, output_tokens=100,
                     length_jobs=5, failed_unbilled=0,
                     savings=SavingsTotals(cost_usd=Decimal("0.10"),
                                           naive_cost_usd=Decimal("0.20")))
    current = Usage(jobs=20, requests=20, input_tokens=1800, output_tokens=200,
                    length_jobs=1, failed_unbilled=5,
                    savings=SavingsTotals(cost_usd=Decimal("0.10"),
                                          naive_cost_usd=Decimal("0.40")))
    assert baseline.cost_per_request_usd == Decimal("0.01")
    assert baseline.tokens_per_dollar == 10_000
    changes = {c.name: c for c in compare(baseline, current)}
    assert changes["cost_per_request_usd"].change == pytest.approx(-0.5)
    assert changes["tokens_per_dollar"].change == pytest.approx(1.0)
    assert changes["requests"].current == 25  # the failed ones with no ledger row count
    assert changes["failure_rate"].current == pytest.approx(5 / 25)
    assert changes["length_rate"].baseline == 0.5
    assert compare(Usage(), Usage())[1].change is None  # nothing to compare: no ratio


@settings(deadline=None)
@given(st.integers(0, 100_000), st.floats(1.0, 3.0))
def test_the_recommendation_covers_p99_with_its_margin_in_steps_of_16(
        p99: int, margin: float) -> None:
    cap = recommend_max_tokens(p99, margin)
    assert cap % 16 == 0 and cap >= 16
    assert cap >= p99 * margin - 1e-6
    assert cap - 16 < max(p99 * margin, 16)


def test_percentile_is_nearest_rank_like_postgres_percentile_disc() -> None:
    values = list(range(1, 101))
    assert [percentile(values, f) for f in (0.5, 0.95, 0.99, 1.0)] == [50, 95, 99, 100]
    assert percentile([], 0.5) == 0


def _outputs(p99: int, asked: int, cost: str = "1.00", output_tokens: int = 1000
             ) -> FeatureOutputs:
    return FeatureOutputs(tenant="t", feature="f", jobs=100, length_jobs=1, capped_jobs=0,
                          p50_output=10, p95_output=p99, p99_output=p99, max_output=p99 * 2,
                          p50_requested=asked, max_requested=asked,
                          output_tokens=output_tokens, cost_usd=Decimal(cost))


def test_the_saving_of_a_cap_is_priced_at_the_cost_per_output_token() -> None:
    line = audit_line(_outputs(p99=99, asked=256), 128, cut_jobs=2, excess_output_tokens=50)
    # $1.00 over 1000 output tokens, 50 tokens past the cap
    assert line.saving_usd == Decimal("0.05")
    assert audit_line(_outputs(99, 256), None, 0, 0).saving_usd == 0


T0 = datetime(2026, 1, 1, tzinfo=UTC)


@settings(deadline=None)
@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=40), st.integers(1, 5_000))
def test_most_in_window_matches_counting_every_window(offsets: list[int], width: int) -> None:
    times = [T0 + timedelta(seconds=s) for s in offsets]
    window = timedelta(seconds=width)
    best, start = most_in_window(times, window)
    brute = max(sum(1 for u in times if t <= u <= t + window) for t in times)
    assert best == brute
    ordered = sorted(times)
    assert ordered[start + best - 1] - ordered[start] <= window


def _send(seconds: int, cost: str, naive: str, retry: int | None = None) -> Send:
    return Send(T0 + timedelta(seconds=seconds), Decimal(cost), Decimal(naive), "engine",
                retry)


def test_a_request_storm_prices_its_repeats_in_the_busiest_window() -> None:
    sends = [_send(0, "0.5", "1"), _send(10, "0.5", "1", 1), _send(20, "0", "1", 2),
             _send(5000, "0.5", "1")]
    storm = request_storm("t", "f", "m", "k", sends, 3, timedelta(seconds=60))
    assert storm is not None
    assert storm.sends == 3
    assert storm.repeats_cost_usd == Decimal("0.5")  # the first send is not a repeat
    assert storm.repeats_naive_cost_usd == Decimal(2)
    assert storm.max_client_retry_count == 2
    assert request_storm("t", "f", "m", "k", sends, 4, timedelta(seconds=60)) is None


def test_a_replayed_key_is_a_storm_when_enough_sends_fit_the_window() -> None:
    assert is_key_storm(2, T0, T0 + timedelta(seconds=30), 3, timedelta(minutes=1))
    assert not is_key_storm(1, T0, T0 + timedelta(seconds=30), 3, timedelta(minutes=1))
    assert not is_key_storm(5, T0, T0 + timedelta(hours=2), 3, timedelta(minutes=1))


def _job(max_tokens: int, tags: dict[str, object] | None) -> NewJob:
    return NewJob(line_no=0, model="m", request={"sampling": {"max_tokens": max_tokens}},
                  estimated_tokens=10 + max_tokens, tags=tags)


def test_a_cap_lowers_max_tokens_and_keeps_what_was_asked() -> None:
    jobs = [_job(256, {"feature": "tags"}), _job(64, {"feature": "tags"}),
            _job(256, {"feature": "chat"}), _job(256, None)]
    capped = apply_caps(jobs, {"tags": 128}, "feature")
    assert capped[0].request["sampling"] == {"max_tokens": 128, "requested_max_tokens": 256}
    assert capped[0].estimated_tokens == 10 + 128
    assert capped[1:] == jobs[1:]  # asked for less, another feature, no feature
    assert jobs[0].request["sampling"] == {"max_tokens": 256}  # the original is untouched
    assert apply_caps(jobs, {}, "feature") == jobs
    assert feature_of({"feature": 7}, "feature") == "7"
    assert feature_of({"team": "x"}, "feature") is None


def test_a_capped_request_capped_again_keeps_what_was_first_asked() -> None:
    """A retried batch line carries the request it was stored with, already capped."""
    (first,) = apply_caps([_job(256, {"feature": "tags"})], {"tags": 128}, "feature")
    (same,) = apply_caps([first], {"tags": 128}, "feature")
    assert same == first  # no second cap: nothing changes
    (lower,) = apply_caps([first], {"tags": 32}, "feature")
    assert lower.request["sampling"] == {"max_tokens": 32, "requested_max_tokens": 256}
    assert lower.estimated_tokens == 10 + 32
    (higher,) = apply_caps([first], {"tags": 200}, "feature")
    assert higher == first  # a cap never raises what a job was stored with
    assert JobCaps({"tags": 32}).job(first) == lower  # the default feature tag
    assert NO_CAPS.jobs([first]) == [first]
