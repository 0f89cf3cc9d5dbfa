"""Pick the cascade's threshold from labelled outcomes: the cheapest setting that still
reaches a target accuracy.

Each labelled item says how confident the small tier was, whether its answer was right,
and whether the next tier's was. For a threshold t, every item below t escalates: it
costs both attempts and gets the large answer; the rest keep the small answer at the small
cost. Sweeping t over the observed confidences covers every distinct outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from routing.cascade import CascadePolicy, Confidence, escalation_reason


@dataclass(frozen=True)
class LabelledOutcome:
    confidence: Confidence
    small_correct: bool
    large_correct: bool


@dataclass(frozen=True)
class CascadeEstimate:
    policy: CascadePolicy
    accuracy: float
    escalation_rate: float
    relative_cost: float  # of sending everything to the large tier (1.0)


def estimate(outcomes: Sequence[LabelledOutcome], policy: CascadePolicy,
             small_cost: float, large_cost: float) -> CascadeEstimate:
    """Accuracy, escalation rate and cost relative to large-only of one policy; the costs
    are per item (any unit: only their ratio matters)."""
    if not outcomes:
        raise ValueError("no labelled outcomes")
    correct = escalated = 0
    for item in outcomes:
        if escalation_reason(item.confidence, policy) is None:
            correct += item.small_correct
        else:
            escalated += 1
            correct += item.large_correct
    n = len(outcomes)
    cost = n * small_cost + escalated * large_cost
    return CascadeEstimate(policy, correct / n, escalated / n, cost / (n * large_cost))


def calibrate(outcomes: Sequence[LabelledOutcome], target_accuracy: float, *,
              small_cost: float, large_cost: float, escalate_on_length: bool = True
              ) -> CascadeEstimate:
    """The mean-logprob threshold with the least cost whose accuracy reaches
    `target_accuracy` (a fraction of items); when none does, the most accurate one."""
    candidates = sorted({item.confidence.mean_logprob for item in outcomes
                         if item.confidence.mean_logprob is not None})
    # Just above each observed value escalates it and everything below; -inf keeps all.
    thresholds = [float("-inf"), *(value + 1e-9 for value in candidates)]
    estimates = [estimate(outcomes, CascadePolicy(t, None, escalate_on_length),
                          small_cost, large_cost) for t in thresholds]
    reaching = [e for e in estimates if e.accuracy >= target_accuracy]
    if reaching:
        return min(reaching, key=lambda e: (e.relative_cost, -e.accuracy))
    return max(estimates, key=lambda e: (e.accuracy, -e.relative_cost))
