"""routing.classifier: the router's logistic regression on request embeddings, its
threshold and how the router consults it, as plain tables."""

from __future__ import annotations

import numpy as np
import pytest

from routing.classifier import (
    RouterClassifier,
    choose_threshold,
    consult,
    fit,
    out_of_fold,
    small_suffices,
    train,
)
from routing.router import Difficulty

TWO = ["small", "large"]


def _separable(n: int = 40, seed: int = 3) -> tuple[np.ndarray, list[bool]]:
    """Points whose first coordinate says the label, with noise in the others."""
    rng = np.random.default_rng(seed)
    labels = [i % 2 == 0 for i in range(n)]
    x = rng.normal(0, 0.3, size=(n, 8))
    x[:, 0] += [1.5 if label else -1.5 for label in labels]
    return x, labels


def test_the_fit_learns_a_separable_set_and_says_so_with_probabilities() -> None:
    x, labels = _separable()
    weights, bias = fit(x, labels, l2=0.1)
    model = RouterClassifier("e", tuple(float(w) for w in weights), bias, 0.5)
    predicted = [model.probability(list(row)) >= 0.5 for row in x]
    assert predicted == labels
    assert model.probability([3.0] + [0.0] * 7) > 0.9
    assert model.probability([-3.0] + [0.0] * 7) < 0.1
    with pytest.raises(ValueError, match="dimensions"):
        model.probability([1.0, 2.0])


def test_one_class_only_gives_a_finite_constant_answer() -> None:
    x, _ = _separable(10)
    weights, bias = fit(x, [True] * 10)
    assert np.all(np.isfinite(weights)) and bias > 0


def test_held_out_probabilities_still_separate_what_generalises() -> None:
    x, labels = _separable(60)
    probabilities = out_of_fold(x, labels, folds=5, l2=0.1)
    right = sum((p >= 0.5) == label for p, label in zip(probabilities, labels, strict=True))
    assert right >= 57


def test_the_label_is_whether_sending_it_up_would_have_helped() -> None:
    assert [small_suffices(s, big) for s, big in
            [(True, True), (True, False), (False, False), (False, True)]] == [
        True, True, True, False]


def test_the_threshold_is_the_cheapest_reaching_the_target() -> None:
    probabilities = [0.9, 0.8, 0.3, 0.1]
    small_ok = [True, True, False, False]
    large_ok = [True, True, True, True]
    best = choose_threshold(probabilities, small_ok, large_ok, 1.0, small_cost=1.0,
                            large_cost=4.0)
    # The two confident items go small, the rest large: all right at (2 + 8) / 16.
    assert (best.threshold, best.accuracy, best.on_small) == (0.8, 1.0, 0.5)
    assert best.relative_cost == pytest.approx(10 / 16)
    # Unreachable: the most accurate (large-only is always a candidate).
    worst = choose_threshold(probabilities, small_ok, [False] * 4, 1.0, small_cost=1.0,
                             large_cost=4.0)
    assert worst.accuracy == 0.5


@pytest.mark.parametrize(("difficulty", "probability", "model"), [
    (Difficulty.EASY, 0.9, "small"),
    (Difficulty.EASY, 0.2, "large"),  # the features said easy; the classifier doubts it
    (Difficulty.MEDIUM, 0.9, "small"),  # the features were cautious; it is not needed
    (Difficulty.MEDIUM, 0.2, "large"),
    (Difficulty.HARD, 0.99, "large"),  # hard work is never sent down
])
def test_the_router_consults_the_classifier_after_the_features(
    difficulty: Difficulty, probability: float, model: str,
) -> None:
    decision = consult(difficulty, probability, 0.7, TWO)
    assert decision.model == model
    assert decision.reason.startswith(f"classifier p(small suffices)={probability:.2f}")


def test_training_picks_a_threshold_on_held_out_items_and_fits_on_all() -> None:
    x, labels = _separable(40)
    small_ok = labels
    large_ok = [True] * 40
    training = train(x, small_ok, large_ok, target_accuracy=0.95, small_cost=1.0,
                     large_cost=3.0, embedding_model="e")
    assert training.items == 40 and training.positives == 20
    assert training.classifier.dimensions == 8
    assert training.choice.accuracy >= 0.95 and training.choice.on_small > 0.3
    assert training.classifier.threshold == training.choice.threshold
