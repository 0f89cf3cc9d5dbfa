"""ledger.cost_model and ledger.attribution: the counterfactual of one job and how its
saving splits by mechanism; ledger.savings: summing rows."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.attribution import (
    BATCHING,
    COMPRESSION,
    EXACT_CACHE,
    FAILOVER,
    MECHANISMS,
    OUTPUT_LIMIT,
    PREFIX_CACHE,
    ROUTING,
    SINGLE_FLIGHT,
    EngineJob,
    attribute_engine_job,
    attribute_escalated_attempt,
    attribute_served_without_running,
    unmodelled,
)
from ledger.cost_model import AloneSample, Calibration, CostBasis, PriceCard, fit_alone
from ledger.savings import SavingsTotals

PROPERTY = settings(database=None, deadline=None, max_examples=300)

CALIBRATION = Calibration(
    model="m", request_overhead_s=Decimal("0.02"), prefill_s_per_token=Decimal("0.0002"),
    decode_s_per_token_bs1=Decimal("0.02"), decode_s_per_token_full=Decimal("0.002"),
    full_batch_jobs=64)
CARD = PriceCard(model="m", engine_hour_usd=Decimal("3.60"))  # $0.001 per engine second
BASIS = CostBasis(CARD, CALIBRATION)


def test_decode_per_token_interpolates_between_the_measured_points() -> None:
    assert CALIBRATION.decode_s_per_token(1) == Decimal("0.02")
    assert CALIBRATION.decode_s_per_token(64) == Decimal("0.002")
    assert CALIBRATION.decode_s_per_token(500) == Decimal("0.002")  # never extrapolated
    middle = CALIBRATION.decode_s_per_token(8)
    # a + b = 0.02 and a / 64 + b = 0.002: a = 0.018 * 64 / 63, b = 0.02 - a.
    a = Decimal("0.018") * 64 / 63
    assert middle == a / 8 + (Decimal("0.02") - a)


def test_a_calibration_without_batching_gain_decodes_at_the_alone_rate() -> None:
    flat = Calibration(model="m", request_overhead_s=Decimal(0),
                       prefill_s_per_token=Decimal(0), decode_s_per_token_bs1=Decimal("0.01"),
                       decode_s_per_token_full=Decimal("0.02"), full_batch_jobs=64)
    assert flat.decode_s_per_token(32) == Decimal("0.01")


def test_a_job_run_alone_with_nothing_cached_saves_nothing_but_the_unexplained() -> None:
    job = EngineJob(prompt_tokens=100, cached_tokens=0, output_tokens=10,
                    requested_max_tokens=32, applied_max_tokens=32, finish_reason="stop",
                    batch_jobs=1)
    # 0.02 + 100 * 0.0002 + 10 * 0.02 = 0.24 s -> $0.00024
    attribution = attribute_engine_job(job, Decimal("0.00024"), BASIS, BASIS)
    assert attribution.naive_cost_usd == Decimal("0.00024")
    assert all(v == 0 for v in attribution.savings.values())
    assert attribution.unexplained_usd == 0


def test_each_mechanism_gets_its_step_of_the_removal_order() -> None:
    big = CostBasis(PriceCard(model="big", engine_hour_usd=Decimal("36")), CALIBRATION)
    job = EngineJob(prompt_tokens=100, cached_tokens=64, output_tokens=10,
                    requested_max_tokens=50, applied_max_tokens=10, finish_reason="length",
                    batch_jobs=64)
    attribution = attribute_engine_job(job, Decimal("0.00005"), BASIS, big)
    s = attribution.savings
    n0 = Decimal("0.0104")  # big: (0.02 + 0.02 + 50 * 0.02) s at $0.01/s
    n1 = Decimal("0.00104")
    n2 = Decimal("0.00024")  # 0.02 + 0.02 + 0.2
    n3 = Decimal("0.0002272")  # prefix: 36 uncached tokens
    n4 = Decimal("0.0000275125")  # 0.02/64 + 36*0.0002 + 10*0.002 s
    assert attribution.naive_cost_usd == n0
    assert (s[ROUTING], s[OUTPUT_LIMIT], s[PREFIX_CACHE], s[BATCHING]) == (
        n0 - n1, n1 - n2, n2 - n3, n3 - n4)
    assert attribution.unexplained_usd == n4 - Decimal("0.00005")


def test_a_compressed_prompt_saves_its_dropped_prefill_under_compression() -> None:
    job = EngineJob(prompt_tokens=400, cached_tokens=0, output_tokens=10,
                    requested_max_tokens=10, applied_max_tokens=10, finish_reason="stop",
                    batch_jobs=1, original_prompt_tokens=1000)
    attribution = attribute_engine_job(job, Decimal("0.0003"), BASIS, BASIS)
    # Naive: 0.02 + 1000 * 0.0002 + 10 * 0.02 = 0.42 s; as compressed 0.02 + 0.08 + 0.2.
    assert attribution.naive_cost_usd == Decimal("0.00042")
    assert attribution.savings[COMPRESSION] == Decimal("0.00012")
    assert attribution.unexplained_usd == 0
    assert sum(attribution.savings.values()) + attribution.unexplained_usd == (
        attribution.saved_usd)


def test_a_job_that_stopped_on_its_own_under_a_cap_saved_nothing_by_the_cap() -> None:
    job = EngineJob(prompt_tokens=10, cached_tokens=0, output_tokens=5,
                    requested_max_tokens=50, applied_max_tokens=10, finish_reason="stop",
                    batch_jobs=1)
    assert attribute_engine_job(job, Decimal(0), BASIS, BASIS).savings[OUTPUT_LIMIT] == 0


@pytest.mark.parametrize("mechanism", [EXACT_CACHE, SINGLE_FLIGHT])
def test_a_job_served_without_running_saves_its_whole_naive_cost(mechanism: str) -> None:
    attribution = attribute_served_without_running(Decimal("0.0123"), mechanism)
    assert attribution.cost_usd == 0
    assert attribution.savings[mechanism] == Decimal("0.0123")
    assert sum(attribution.savings.values()) == attribution.saved_usd


def test_an_unknown_mechanism_is_refused() -> None:
    with pytest.raises(ValueError, match="mechanism"):
        attribute_served_without_running(Decimal(1), "magic")


def test_an_unmodelled_job_claims_no_saving() -> None:
    attribution = unmodelled(Decimal("0.5"))
    assert attribution.naive_cost_usd == attribution.cost_usd == Decimal("0.5")
    assert attribution.saved_usd == 0


seconds = st.decimals(min_value=Decimal(0), max_value=Decimal("0.5"), places=6)
calibrations = st.builds(
    Calibration, model=st.just("m"), request_overhead_s=seconds, prefill_s_per_token=seconds,
    decode_s_per_token_bs1=seconds, decode_s_per_token_full=seconds,
    full_batch_jobs=st.integers(1, 256))
cards = st.builds(PriceCard, model=st.just("m"),
                  engine_hour_usd=st.decimals(min_value=Decimal(0), max_value=Decimal(100),
                                              places=4))


@st.composite
def engine_jobs(draw: st.DrawFn) -> EngineJob:
    prompt = draw(st.integers(0, 10_000))
    requested = draw(st.integers(1, 4096))
    applied = draw(st.integers(1, requested))
    return EngineJob(prompt_tokens=prompt, cached_tokens=draw(st.integers(0, prompt)),
                     output_tokens=draw(st.integers(0, applied)),
                     requested_max_tokens=requested, applied_max_tokens=applied,
                     finish_reason=draw(st.sampled_from(["stop", "length", None])),
                     batch_jobs=draw(st.integers(1, 512)),
                     original_prompt_tokens=draw(st.none() | st.integers(prompt, 20_000)))


@PROPERTY
@given(job=engine_jobs(), calibration=calibrations, card=cards,
       baseline_rate=st.integers(1, 10),
       cost=st.decimals(min_value=Decimal(0), max_value=Decimal(10), places=10))
def test_the_parts_add_up_to_the_total_saving_exactly(
    job: EngineJob, calibration: Calibration, card: PriceCard, baseline_rate: int,
    cost: Decimal,
) -> None:
    served = CostBasis(card, calibration)
    # A baseline at least as expensive per hour as the served model (the largest tier).
    baseline = CostBasis(PriceCard(model="b", engine_hour_usd=card.engine_hour_usd
                                   * baseline_rate), calibration)
    attribution = attribute_engine_job(job, cost, served, baseline)
    parts = sum(attribution.savings.values(), Decimal(0)) + attribution.unexplained_usd
    assert parts == attribution.naive_cost_usd - attribution.cost_usd
    assert set(attribution.savings) == set(MECHANISMS)
    # Every modelled mechanism saves something or nothing, never a negative amount.
    for mechanism in (ROUTING, COMPRESSION, OUTPUT_LIMIT, PREFIX_CACHE, BATCHING):
        assert attribution.savings[mechanism] >= 0, mechanism
    assert attribution.naive_cost_usd >= 0


money_amounts = st.decimals(min_value=Decimal(0), max_value=Decimal(10), places=10)


@PROPERTY
@given(job=engine_jobs(), calibration=calibrations, card=cards, cost=money_amounts,
       failover=money_amounts)
def test_failed_engine_calls_are_their_own_loss_and_the_rest_is_as_without_them(
    job: EngineJob, calibration: Calibration, card: PriceCard, cost: Decimal,
    failover: Decimal,
) -> None:
    """A row that pays for engine calls that raised: cost includes them, `failover` is
    minus their share (never more than the cost), every other part is what it would be
    for the cost without them, and the parts still add up, on every kind of row."""
    basis = CostBasis(card, calibration)
    share = min(failover, cost)
    billed = attribute_engine_job(job, cost, basis, basis, failover)
    alone = attribute_engine_job(job, cost - share, basis, basis)
    assert billed.cost_usd == cost and billed.savings[FAILOVER] == -share
    assert billed.naive_cost_usd == alone.naive_cost_usd
    assert billed.unexplained_usd == alone.unexplained_usd
    assert {m: v for m, v in billed.savings.items() if m != FAILOVER} == {
        m: v for m, v in alone.savings.items() if m != FAILOVER}
    for row in (billed, unmodelled(cost, failover), attribute_escalated_attempt(cost, failover)):
        parts = sum(row.savings.values(), Decimal(0)) + row.unexplained_usd
        assert parts == row.naive_cost_usd - row.cost_usd
        assert row.savings[FAILOVER] == -share
    assert unmodelled(cost, failover).naive_cost_usd == cost - share  # no other saving



@PROPERTY
@given(job=engine_jobs(), small=calibrations, large=calibrations, card=cards,
       large_rate=st.integers(1, 10), cost=money_amounts)
def test_a_job_on_a_cheaper_tier_saves_exactly_the_gap_to_the_baseline_in_routing(
    job: EngineJob, small: Calibration, large: Calibration, card: PriceCard,
    large_rate: int, cost: Decimal,
) -> None:
    """`auto` sent it to the small tier, or a cascade kept the small tier's answer."""
    served = CostBasis(card, small)
    baseline = CostBasis(PriceCard(model="large", engine_hour_usd=card.engine_hour_usd
                                   * large_rate), large)
    attribution = attribute_engine_job(job, cost, served, baseline)
    naive_out = job.naive_output_tokens
    on_baseline = baseline.card.engine_cost(large.alone_seconds(job.sent_prompt_tokens, naive_out))
    on_served = card.engine_cost(small.alone_seconds(job.sent_prompt_tokens, naive_out))
    assert attribution.naive_cost_usd == on_baseline
    assert attribution.savings[ROUTING] == on_baseline - on_served
    # On the baseline itself nothing is saved by routing.
    assert attribute_engine_job(job, cost, baseline, baseline).savings[ROUTING] == 0


@PROPERTY
@given(final_job=engine_jobs(), small=calibrations, large=calibrations, card=cards,
       large_rate=st.integers(1, 10), final_cost=money_amounts,
       attempt_costs=st.lists(money_amounts, min_size=1, max_size=3))
def test_an_escalated_cascade_bills_every_attempt_and_routing_carries_the_loss(
    final_job: EngineJob, small: Calibration, large: Calibration, card: PriceCard,
    large_rate: int, final_cost: Decimal, attempt_costs: list[Decimal],
) -> None:
    """The attempts that were not kept, then the answer that was, each its own row: the
    naive way runs the job once, so the attempts' costs are the cascade's loss and the
    rows still add up, one by one and summed."""
    baseline = CostBasis(PriceCard(model="large", engine_hour_usd=card.engine_hour_usd
                                   * large_rate), large)
    attempts = [attribute_escalated_attempt(c) for c in attempt_costs]
    for attempt, cost in zip(attempts, attempt_costs, strict=True):
        assert attempt.naive_cost_usd == 0 and attempt.cost_usd == cost
        assert attempt.savings[ROUTING] == -cost
        assert sum(attempt.savings.values(), Decimal(0)) + attempt.unexplained_usd == -cost
    final = attribute_engine_job(final_job, final_cost, CostBasis(card, small), baseline)
    rows = [{"cost_usd": a.cost_usd, **a.columns()} for a in [*attempts, final]]
    total = SavingsTotals.of_rows(rows)
    assert total.cost_usd == final_cost + sum(attempt_costs, Decimal(0))
    assert total.naive_cost_usd == final.naive_cost_usd
    assert total.savings[ROUTING] == final.savings[ROUTING] - sum(attempt_costs, Decimal(0))
    assert total.saved_usd == sum(total.savings.values(), Decimal(0)) + total.unexplained_usd


@PROPERTY
@given(st.lists(st.tuples(st.decimals(min_value=Decimal(0), max_value=Decimal(1), places=10),
                          st.decimals(min_value=Decimal(0), max_value=Decimal(1), places=10),
                          st.sampled_from(MECHANISMS)), max_size=50))
def test_totals_equal_the_sum_of_their_rows(
    rows: list[tuple[Decimal, Decimal, str]],
) -> None:
    attributions = [attribute_served_without_running(naive, m) if i % 2 else unmodelled(cost)
                    for i, (cost, naive, m) in enumerate(rows)]
    columns = [{"cost_usd": a.cost_usd, **a.columns()} for a in attributions]
    total = SavingsTotals.of_rows(columns)
    assert total.naive_cost_usd == sum((a.naive_cost_usd for a in attributions), Decimal(0))
    assert total.saved_usd == sum(total.savings.values(), Decimal(0)) + total.unexplained_usd


def test_the_summary_leads_with_the_saving_and_names_each_mechanism_that_moved() -> None:
    total = SavingsTotals.of_rows([
        {"cost_usd": Decimal(0), **attribute_served_without_running(
            Decimal("0.01"), EXACT_CACHE).columns()},
        {"cost_usd": Decimal("0.01"), **unmodelled(Decimal("0.01")).columns()},
    ])
    rows = dict(total.summary_rows())
    assert rows["saved vs naive"] == "$0.010000 (50%)"
    assert rows["  by exact result cache"] == "$0.010000"
    assert "  by batching" not in rows
    assert total.as_dict()["savings_by_mechanism_usd"]["exact_cache"] == "0.0100000000"


def test_the_fit_recovers_a_line_and_never_goes_negative() -> None:
    exact = [AloneSample(p, o, 0.03 + 0.0004 * p + 0.02 * o)
             for p in (15, 190, 730) for o in (4, 48)]
    overhead, prefill, decode = fit_alone(exact)
    assert (overhead, prefill, decode) == pytest.approx((0.03, 0.0004, 0.02))
    # Prompt length that does not matter at all, plus noise that would make it negative.
    noisy = [AloneSample(15, 4, 0.11), AloneSample(730, 4, 0.10),
             AloneSample(15, 48, 1.0), AloneSample(730, 48, 0.99)]
    overhead, prefill, decode = fit_alone(noisy)
    assert prefill == 0 and overhead > 0 and decode > 0


def test_a_relative_fit_follows_short_requests_where_plain_least_squares_follows_long() -> None:
    exact = [AloneSample(p, o, 0.03 + 0.0004 * p + 0.02 * o)
             for p in (15, 190, 730) for o in (4, 48)]
    assert fit_alone(exact, relative=True) == pytest.approx((0.03, 0.0004, 0.02))
    # The longest request decodes more slowly than the line says (attention over a long
    # prompt): plain least squares bends the line towards it, a relative fit much less.
    skewed = [*exact[:-1], AloneSample(730, 48, exact[-1].seconds * 1.25)]

    def worst_error(fit: tuple[float, float, float]) -> float:
        """The largest relative error on the requests that kept to the line."""
        overhead, prefill, decode = fit
        return max(abs((overhead + prefill * s.prompt_tokens + decode * s.output_tokens)
                       / s.seconds - 1) for s in exact[:-1])

    assert worst_error(fit_alone(skewed, relative=True)) < 0.06
    assert worst_error(fit_alone(skewed)) > 0.15
