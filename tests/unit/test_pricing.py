"""ledger.pricing: sharing a batch's engine time and pricing each job."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.pricing import JobCost, TokenUsage, price_job, share_engine_seconds
from penny.settings import ModelPrice

PROPERTY = settings(database=None, deadline=None, max_examples=300)


def test_computed_tokens_excludes_the_cached_prompt() -> None:
    assert TokenUsage(prompt_tokens=100, cached_tokens=30, output_tokens=7).computed_tokens == 77


def test_share_of_an_empty_batch_is_empty() -> None:
    assert share_engine_seconds(12.5, []) == []


@pytest.mark.parametrize(
    ("total", "usages", "expected"),
    [
        pytest.param(
            13.0,
            [TokenUsage(1000, 900, 100), TokenUsage(1000, 0, 100)],
            [2.0, 11.0],
            id="cached-heavy-job-pays-less",
        ),
        pytest.param(
            6.0,
            [TokenUsage(10, 0, 10), TokenUsage(5, 0, 5), TokenUsage(5, 0, 5)],
            [3.0, 1.5, 1.5],
            id="proportional-to-computed-tokens",
        ),
        pytest.param(
            9.0,
            [TokenUsage(0, 0, 0), TokenUsage(0, 0, 0), TokenUsage(0, 0, 0)],
            [3.0, 3.0, 3.0],
            id="zero-weight-split-evenly",
        ),
        pytest.param(
            4.0,
            [TokenUsage(50, 50, 0), TokenUsage(80, 80, 0)],
            [2.0, 2.0],
            id="fully-cached-no-output-split-evenly",
        ),
        pytest.param(
            5.0,
            [TokenUsage(10, 20, 0), TokenUsage(10, 0, 0)],
            [0.0, 5.0],
            id="negative-weight-counts-as-zero",
        ),
        pytest.param(7.0, [TokenUsage(3, 1, 2)], [7.0], id="single-job-gets-everything"),
    ],
)
def test_share_engine_seconds(
    total: float, usages: list[TokenUsage], expected: list[float]
) -> None:
    shares = share_engine_seconds(total, usages)
    assert shares == pytest.approx(expected)
    assert sum(shares) == pytest.approx(total)


def test_cached_job_pays_less_than_the_same_job_uncached() -> None:
    cached, uncached = share_engine_seconds(
        10.0, [TokenUsage(2000, 1500, 50), TokenUsage(2000, 0, 50)]
    )
    assert cached < uncached


usages = st.builds(
    lambda prompt, cached_part, output: TokenUsage(prompt, min(cached_part, prompt), output),
    st.integers(min_value=0, max_value=100_000),
    st.integers(min_value=0, max_value=100_000),
    st.integers(min_value=0, max_value=10_000),
)


@PROPERTY
@given(
    st.floats(min_value=0.0, max_value=1e5, allow_nan=False, allow_infinity=False),
    st.lists(usages, min_size=1, max_size=50),
)
def test_shares_sum_to_the_total_and_are_never_negative(
    total: float, batch: list[TokenUsage]
) -> None:
    shares = share_engine_seconds(total, batch)
    assert len(shares) == len(batch)
    assert all(s >= 0 for s in shares)
    assert sum(shares) == pytest.approx(total, rel=1e-9, abs=1e-9)


DEFAULT_PRICE = ModelPrice()  # 0.10 $/engine-hour; 0.15 / 0.075 / 0.60 $ per M tokens


def test_default_price_is_what_these_tests_assume() -> None:
    expected = ModelPrice(
        engine_hour_usd=Decimal("0.10"),
        list_input_usd_per_mtok=Decimal("0.15"),
        list_cached_input_usd_per_mtok=Decimal("0.075"),
        list_output_usd_per_mtok=Decimal("0.60"),
    )
    assert expected == DEFAULT_PRICE


@pytest.mark.parametrize(
    ("usage", "seconds", "cost", "list_cost"),
    [
        pytest.param(TokenUsage(1000, 400, 500), 36.0, "0.0010000000", "0.0004200000",
                     id="mixed-usage"),
        pytest.param(TokenUsage(0, 0, 0), 0.0, "0E-10", "0E-10", id="nothing"),
        pytest.param(TokenUsage(1_000_000, 0, 0), 3600.0, "0.1000000000", "0.1500000000",
                     id="one-hour-one-million-input"),
        pytest.param(TokenUsage(1_000_000, 1_000_000, 1_000_000), 1.0, "0.0000277778",
                     "0.6750000000", id="all-cached-rounded-to-ten-places"),
        pytest.param(TokenUsage(3, 0, 0), 0.1, "0.0000027778", "0.0000004500",
                     id="float-seconds-taken-by-repr"),
    ],
)
def test_price_job_default_price(
    usage: TokenUsage, seconds: float, cost: str, list_cost: str
) -> None:
    priced = price_job(usage, seconds, DEFAULT_PRICE)
    assert priced == JobCost(cost_usd=Decimal(cost), list_cost_usd=Decimal(list_cost))
    # Quantised to the ledger column's ten decimal places.
    assert priced.cost_usd.as_tuple().exponent == -10
    assert priced.list_cost_usd.as_tuple().exponent == -10


def test_price_job_custom_price() -> None:
    price = ModelPrice(
        engine_hour_usd=Decimal("7.20"),
        list_input_usd_per_mtok=Decimal("3"),
        list_cached_input_usd_per_mtok=Decimal("0.30"),
        list_output_usd_per_mtok=Decimal("15"),
    )
    priced = price_job(TokenUsage(2000, 1000, 100), 10.0, price)
    assert priced.cost_usd == Decimal("0.0200000000")
    # (1000 * 3 + 1000 * 0.30 + 100 * 15) / 1e6 = 4800 / 1e6
    assert priced.list_cost_usd == Decimal("0.0048000000")


def test_a_single_flight_copy_costs_nothing_and_records_what_it_saved() -> None:
    import uuid

    from ledger.pricing import copied_answer_ledger

    leader_id = uuid.uuid4()
    leader = {"model": "m", "input_tokens": 100, "cached_tokens": 64, "output_tokens": 9,
              "engine_seconds": 0.25, "cost_usd": Decimal("0.0000069444"),
              "list_cost_usd": Decimal("0.0000161")}
    copy = copied_answer_ledger(leader, leader_id)
    assert copy["cost_usd"] == 0 and copy["engine_seconds"] == 0
    assert copy["single_flight_saved_usd"] == leader["cost_usd"]
    assert copy["list_cost_usd"] == leader["list_cost_usd"]
    assert (copy["input_tokens"], copy["output_tokens"]) == (100, 9)
    assert copy["served_by"] == "single_flight" and copy["source_job_id"] == leader_id
    assert leader["cost_usd"] == Decimal("0.0000069444")  # the leader's row is untouched
