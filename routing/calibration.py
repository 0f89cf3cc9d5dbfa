"""Pick the cascade's threshold from labelled outcomes: the cheapest setting that still
reaches a target accuracy.

Each labelled item says how confident the small tier was, whether its answer was right,
and whether the next tier's was. For a threshold t, every item below t escalates: it
costs both attempts and gets the large answer; the rest keep the small answer at the small
cost. Sweeping t over the observed confidences covers every distinct outcome.
"""

from __future__ import annotations

import json
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


@dataclass(frozen=True)
class LabelledSet:
    outcomes: list[LabelledOutcome]
    # Mean cost per item of each tier, when the lines carry them (`*_cost_usd`).
    small_cost: float | None
    large_cost: float | None
    # Each item's prompt, when every line carries one (`prompt`): what the router's
    # classifier is trained on.
    prompts: list[str] | None = None


def parse_labelled(text: str) -> LabelledSet:
    """JSON lines of `{"mean_logprob", "finish_reason", "small_correct", "large_correct"}`,
    optionally with `min_logprob`, `small_cost_usd`, `large_cost_usd` and `prompt` (what
    `bench/tier_eval.py` writes). A bad line raises ValueError naming it (1-based)."""
    outcomes: list[LabelledOutcome] = []
    costs: dict[str, list[float]] = {"small": [], "large": []}
    prompts: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
            mean = line["mean_logprob"]
            outcomes.append(LabelledOutcome(
                Confidence(None if mean is None else float(mean),
                           None if line.get("min_logprob") is None
                           else float(line["min_logprob"]),
                           str(line.get("finish_reason") or "stop")),
                bool(line["small_correct"]), bool(line["large_correct"])))
            if isinstance(line.get("prompt"), str):
                prompts.append(line["prompt"])
            for tier, values in costs.items():
                if line.get(f"{tier}_cost_usd") is not None:
                    values.append(float(line[f"{tier}_cost_usd"]))
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"line {number}: {type(error).__name__}: {error}") from None
    if not outcomes:
        raise ValueError("no labelled outcomes")

    def mean_of(values: list[float]) -> float | None:
        return sum(values) / len(values) if len(values) == len(outcomes) else None

    return LabelledSet(outcomes, mean_of(costs["small"]), mean_of(costs["large"]),
                       prompts if len(prompts) == len(outcomes) else None)
