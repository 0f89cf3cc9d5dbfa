"""workers.calibration_probe's time budget and stated precision (the probe itself runs on
the real engine in the e2e tests)."""

from __future__ import annotations

import pytest

from ledger.cost_model import AloneFit, AloneSample
from workers.calibration_probe import CalibrationSkipped, ProbeBudget, fit_error


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_call_that_would_end_past_the_budget_skips_the_calibration() -> None:
    clock = Clock()
    budget = ProbeBudget(30.0, clock)
    budget.check("warm-up", 0.0)  # nothing spent, nothing predicted: it may start
    clock.now += 20.0
    budget.check("a short call", 9.0)  # would end at 29 s
    with pytest.raises(CalibrationSkipped) as skipped:
        budget.check("a batch of 64", 10.5)  # would end at 30.5 s
    message = skipped.value.message
    assert message.startswith("calibration skipped: a batch of 64 was predicted to take 10.5")
    assert "20.0 s of the 30 s budget spent" in message and "nothing was stored" in message


def test_a_budget_of_nothing_skips_before_the_first_call() -> None:
    with pytest.raises(CalibrationSkipped, match="no time was left for the probe"):
        ProbeBudget(0.0, Clock()).check("the probe", 0.0)


def test_the_stated_precision_is_the_largest_gap_between_fit_and_measure() -> None:
    samples = [AloneSample(10, 4, 1.0), AloneSample(700, 48, 2.0)]
    # The fit says 0.91 s (9% under) and 6.0 s (200% over): the worst of the two counts.
    assert fit_error(samples, AloneFit(0.5, 0.001, 0.1)) == pytest.approx(2.0)
    exact = [AloneSample(10, 4, 0.5 + 0.01 + 0.4)]
    assert fit_error(exact, AloneFit(0.5, 0.001, 0.1)) == pytest.approx(0.0)
    # The context term counts: 10 * 4 + 6 tokens of context at 0.01 s adds 0.46 s.
    assert fit_error(exact, AloneFit(0.5, 0.001, 0.1, 0.01)) == pytest.approx(0.46 / 0.91)
