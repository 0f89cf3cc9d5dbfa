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
from ledger.cost_model import (
    AloneFit,
    AloneSample,
    Calibration,
    CostBasis,
    PriceCard,
    context_tokens,
    fit_alone,
)
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
    fit = fit_alone(exact)
    assert (fit.overhead, fit.prefill, fit.decode) == pytest.approx((0.03, 0.0004, 0.02))
    assert fit.context == pytest.approx(0.0, abs=1e-15)
    # Prompt length that does not matter at all, plus noise that would make it negative.
    noisy = [AloneSample(15, 4, 0.11), AloneSample(730, 4, 0.10),
             AloneSample(15, 48, 1.0), AloneSample(730, 48, 0.99)]
    fit = fit_alone(noisy)
    assert fit.prefill == 0 and fit.context == 0 and fit.overhead > 0 and fit.decode > 0


# The probe's shapes: about 15, 730 and 1,450 prompt tokens times 4 and 48 answer tokens.
PROBE_SHAPES = [(p, o) for p in (15, 730, 1450) for o in (4, 48)]


@pytest.mark.parametrize("relative", [False, True])
def test_the_fit_recovers_decoding_that_slows_with_the_context(relative: bool) -> None:
    truth = AloneFit(overhead=0.03, prefill=0.0012, decode=0.025, context=0.00003)
    samples = [AloneSample(p, o, truth.seconds(p, o)) for p, o in PROBE_SHAPES]
    fit = fit_alone(samples, relative=relative)
    assert (fit.overhead, fit.prefill, fit.decode, fit.context) == pytest.approx(
        (0.03, 0.0012, 0.025, 0.00003))
    # A 1,100-token prompt answered in 512 tokens: each token attends over 1,100 to 1,611
    # tokens of context, which more than doubles its decoding time.
    assert fit.seconds(1100, 512) == pytest.approx(
        0.03 + 0.0012 * 1100 + 0.025 * 512 + 0.00003 * (1100 * 512 + 512 * 511 / 2))


def test_a_noisy_tiny_context_term_is_dropped_never_negative() -> None:
    line = AloneFit(overhead=0.03, prefill=0.0012, decode=0.025)
    samples = [AloneSample(p, o, line.seconds(p, o)) for p, o in PROBE_SHAPES]
    # The longest request ran a little fast: alone, the context term would go negative.
    *rest, longest = samples
    noisy = [*rest, AloneSample(longest.prompt_tokens, longest.output_tokens,
                                longest.seconds * 0.97)]
    for relative in (False, True):
        fit = fit_alone(noisy, relative=relative)
        assert fit.context == 0
        assert fit.overhead >= 0 and fit.prefill > 0 and fit.decode > 0
        assert fit.seconds(2000, 1000) < line.seconds(2000, 1000)


def test_samples_of_one_answer_length_cannot_separate_the_context_term() -> None:
    # With one answer length the context grows with the prompt alone: it is the prefill.
    samples = [AloneSample(p, 16, 0.05 + 0.001 * p + 0.02 * 16) for p in (15, 730, 1450)]
    fit = fit_alone(samples)
    assert fit.context == 0
    assert fit.seconds(400, 16) == pytest.approx(0.05 + 0.001 * 400 + 0.02 * 16)


def test_context_tokens_sum_every_decode_steps_context() -> None:
    assert context_tokens(10, 0) == 0
    assert context_tokens(10, 1) == 10
    assert context_tokens(10, 3) == 10 + 11 + 12
    assert context_tokens(-5, 3) == 0 + 1 + 2


CONTEXT = Calibration(
    model="m", request_overhead_s=Decimal("0.02"), prefill_s_per_token=Decimal("0.0002"),
    decode_s_per_token_bs1=Decimal("0.02"), decode_s_per_token_full=Decimal("0.002"),
    full_batch_jobs=64, decode_s_per_context_token=Decimal("0.00003"))


def test_alone_and_batched_seconds_add_the_context_term() -> None:
    context = Decimal("0.00003") * (100 * 10 + 45)
    assert CONTEXT.alone_seconds(100, 10) == CALIBRATION.alone_seconds(100, 10) + context
    assert CONTEXT.batched_seconds(100, 10, 8) == (CALIBRATION.batched_seconds(100, 10, 8)
                                                   + context)
    # A cached prefix is not prefilled, but decoding attends over it all the same.
    assert CONTEXT.alone_seconds(20, 10, 100) == CALIBRATION.alone_seconds(20, 10) + context
    assert CONTEXT.batched_seconds(20, 10, 8, 100) == (CALIBRATION.batched_seconds(20, 10, 8)
                                                       + context)
    # A calibration from before the term was measured models decoding as before.
    assert CALIBRATION.decode_s_per_context_token == 0
    assert CALIBRATION.alone_seconds(20, 10, 100) == CALIBRATION.alone_seconds(20, 10)


def test_with_a_context_term_the_prefix_cache_saves_only_prefill() -> None:
    job = EngineJob(prompt_tokens=300, cached_tokens=256, output_tokens=40,
                    requested_max_tokens=64, applied_max_tokens=64, finish_reason="stop",
                    batch_jobs=1)
    basis = CostBasis(CARD, CONTEXT)
    naive = CARD.engine_cost(CONTEXT.alone_seconds(300, 40))
    result = attribute_engine_job(job, naive, basis, basis)
    assert result.savings[PREFIX_CACHE] == naive - CARD.engine_cost(
        CONTEXT.alone_seconds(300, 40) - Decimal("0.0002") * 256)
    assert sum(result.savings.values()) + result.unexplained_usd == (
        result.naive_cost_usd - result.cost_usd)


def test_a_relative_fit_follows_short_requests_where_plain_least_squares_follows_long() -> None:
    exact = [AloneSample(p, o, 0.03 + 0.0004 * p + 0.02 * o)
             for p in (15, 190, 730) for o in (4, 48)]
    assert fit_alone(exact, relative=True).decode == pytest.approx(0.02)
    # The long prompt's short answer ran slow (noise no term explains): plain least
    # squares bends the line towards it, a relative fit much less.
    slow = 4
    skewed = [*exact]
    skewed[slow] = AloneSample(exact[slow].prompt_tokens, exact[slow].output_tokens,
                               exact[slow].seconds * 1.25)

    def worst_error(fit: AloneFit) -> float:
        """The largest relative error on the requests that kept to the line."""
        return max(abs(fit.seconds(s.prompt_tokens, s.output_tokens) / s.seconds - 1)
                   for i, s in enumerate(exact) if i != slow)

    assert worst_error(fit_alone(skewed, relative=True)) < 0.08
    assert worst_error(fit_alone(skewed)) > 0.12


def test_the_context_term_explains_a_long_answer_after_a_long_prompt() -> None:
    exact = [AloneSample(p, o, 0.03 + 0.0004 * p + 0.02 * o)
             for p in (15, 190, 730) for o in (4, 48)]
    # The longest request decodes more slowly than the straight line says (attention over
    # a long prompt): the context term takes it, and prefill stays near its value.
    skewed = [*exact[:-1], AloneSample(730, 48, exact[-1].seconds * 1.25)]
    for relative in (False, True):
        fit = fit_alone(skewed, relative=relative)
        assert fit.context > 0
        assert fit.prefill == pytest.approx(0.0004, rel=0.15)
        assert fit.seconds(730, 48) == pytest.approx(exact[-1].seconds * 1.25, rel=0.05)
    # Fitted as a straight line (the model before it had the term), it falls short there.
    line = fit_alone(skewed, relative=True, context=False)
    assert line.context == 0
    assert line.seconds(730, 48) < 0.9 * exact[-1].seconds * 1.25
