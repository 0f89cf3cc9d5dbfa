"""The router's learned step: a logistic regression on the request's embedding that says
how likely the cheapest tier is to answer as well as the largest.

It is trained on labelled outcomes (`penny train-router`, from the set `penny
calibrate-cascade` reads, with each item's prompt): an item is positive when the small
tier's answer was right, or when the large tier's was wrong too (sending it up would not
have helped). The router consults it after the cheap features: work the features call
hard stays on the tier they chose; for the rest, a probability at or above the
classifier's threshold sends the job to the cheapest tier, and one below keeps it off it.

Pure numpy: fit, predict, pick a threshold, and the plain dict it is stored as.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from routing.router import Difficulty, RouteDecision, tier_for

Vectors = npt.NDArray[np.float64]


@dataclass(frozen=True)
class RouterClassifier:
    """One version of the classifier. `id`/`version` are its stored identity (None before
    storing); `embedding_model` is the embedder whose vectors it reads."""

    embedding_model: str
    weights: tuple[float, ...]
    bias: float
    threshold: float
    id: int | None = None
    version: int | None = None

    @property
    def dimensions(self) -> int:
        return len(self.weights)

    def probability(self, embedding: Sequence[float]) -> float:
        """How likely the cheapest tier is to do as well as the largest on this request."""
        if len(embedding) != self.dimensions:
            raise ValueError(f"an embedding of {len(embedding)} dimensions for a classifier "
                             f"of {self.dimensions}")
        score = float(np.dot(np.asarray(self.weights), np.asarray(embedding, dtype=float)))
        return _sigmoid(score + self.bias)

    def as_stored(self) -> dict[str, Any]:
        return {"embedding_model": self.embedding_model, "weights": list(self.weights),
                "bias": self.bias, "threshold": self.threshold}


def _sigmoid(score: float) -> float:
    # Split by sign so neither branch overflows.
    if score >= 0:
        return 1.0 / (1.0 + float(np.exp(-score)))
    exp = float(np.exp(score))
    return exp / (1.0 + exp)


def small_suffices(small_correct: bool, large_correct: bool) -> bool:
    """The training label: sending the item up would not have made its answer better."""
    return small_correct or not large_correct


def fit(embeddings: Vectors, labels: Sequence[bool], *, l2: float = 1.0,
        iterations: int = 50) -> tuple[npt.NDArray[np.float64], float]:
    """L2-regularised logistic regression by Newton's method: (weights, bias). The bias is
    not regularised; with one class only, the weights stay 0 and the bias says so."""
    x = np.asarray(embeddings, dtype=float)
    y = np.asarray(labels, dtype=float)
    if x.ndim != 2 or len(x) != len(y) or len(y) == 0:
        raise ValueError("one embedding per label, at least one")
    n, d = x.shape
    design = np.hstack([x, np.ones((n, 1))])
    theta = np.zeros(d + 1)
    penalty = np.full(d + 1, l2)
    penalty[-1] = 1e-6  # the bias: barely held, so an all-one-class set stays finite
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ theta, -30, 30)))
        gradient = design.T @ (p - y) + penalty * theta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if float(np.max(np.abs(step))) < 1e-8:
            break
    return theta[:-1], float(theta[-1])


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float
    accuracy: float
    on_small: float  # the fraction of items sent to the small tier
    relative_cost: float  # of sending everything to the large tier (1.0)


def choose_threshold(probabilities: Sequence[float], small_correct: Sequence[bool],
                     large_correct: Sequence[bool], target_accuracy: float, *,
                     small_cost: float, large_cost: float) -> ThresholdChoice:
    """The threshold with the least cost whose accuracy reaches `target_accuracy` (items
    at or above it go to the small tier); when none does, the most accurate. 1.01 sends
    nothing to the small tier, so large-only is always a candidate."""
    if not probabilities or large_cost <= 0:
        raise ValueError("no items, or no large-tier cost to compare with")
    n = len(probabilities)
    choices = []
    for threshold in sorted({*probabilities, 1.01}):
        small = [p >= threshold for p in probabilities]
        right = sum(s_ok if on_small else l_ok for on_small, s_ok, l_ok
                    in zip(small, small_correct, large_correct, strict=True))
        sent = sum(small)
        cost = (sent * small_cost + (n - sent) * large_cost) / (n * large_cost)
        choices.append(ThresholdChoice(threshold, right / n, sent / n, cost))
    reaching = [c for c in choices if c.accuracy >= target_accuracy]
    if reaching:
        return min(reaching, key=lambda c: (c.relative_cost, -c.accuracy))
    return max(choices, key=lambda c: (c.accuracy, -c.relative_cost))


def out_of_fold(embeddings: Vectors, labels: Sequence[bool], *, folds: int = 5,
                l2: float = 1.0) -> list[float]:
    """Each item's probability from a classifier fitted without it (k interleaved folds):
    an honest estimate of how the classifier does on requests it has not seen."""
    x = np.asarray(embeddings, dtype=float)
    n = len(labels)
    folds = max(2, min(folds, n))
    probabilities = [0.0] * n
    for fold in range(folds):
        held = [i for i in range(n) if i % folds == fold]
        kept = [i for i in range(n) if i % folds != fold]
        weights, bias = fit(x[kept], [labels[i] for i in kept], l2=l2)
        for i in held:
            probabilities[i] = _sigmoid(float(x[i] @ weights) + bias)
    return probabilities


@dataclass(frozen=True)
class Training:
    classifier: RouterClassifier
    # The threshold picked on out-of-fold probabilities, with what it scored there.
    choice: ThresholdChoice
    items: int
    positives: int


def train(embeddings: Vectors, small_correct: Sequence[bool], large_correct: Sequence[bool],
          *, target_accuracy: float, small_cost: float, large_cost: float,
          embedding_model: str, folds: int = 5, l2: float = 1.0) -> Training:
    """Fit on every item; pick the threshold on out-of-fold probabilities, so the accuracy
    it reports is one on unseen requests."""
    labels = [small_suffices(s, big) for s, big in zip(small_correct, large_correct,
                                                        strict=True)]
    probabilities = out_of_fold(embeddings, labels, folds=folds, l2=l2)
    choice = choose_threshold(probabilities, small_correct, large_correct, target_accuracy,
                              small_cost=small_cost, large_cost=large_cost)
    weights, bias = fit(embeddings, labels, l2=l2)
    classifier = RouterClassifier(embedding_model=embedding_model,
                                  weights=tuple(float(w) for w in weights), bias=bias,
                                  threshold=choice.threshold)
    return Training(classifier, choice, len(labels), sum(labels))


def consult(difficulty: Difficulty, probability: float, threshold: float,
            tiers: Sequence[str]) -> RouteDecision:
    """The route once the classifier has been asked, its reason the classifier's part:
    hard work keeps the features' tier; otherwise the cheapest tier when the probability
    reaches the threshold, and the features' tier (at least the second) when it does
    not."""
    index = tier_for(difficulty, len(tiers))
    said = f"classifier p(small suffices)={probability:.2f}"
    if difficulty is not Difficulty.HARD:
        if probability >= threshold:
            index = 0
            said += f" >= {threshold:.2f}"
        else:
            index = max(index, min(1, len(tiers) - 1))
            said += f" < {threshold:.2f}"
    return RouteDecision(model=tiers[index], tier=index, reason=said)
