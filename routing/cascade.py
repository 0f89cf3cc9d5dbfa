"""`model: "cascade"`: run the cheapest tier first; keep its answer when it is confident,
send the job on to the next tier when it is not.

Confidence is what the engine already measures for free once logprobs are on: the mean
and the lowest token log-probability of the answer, and whether it was cut off by
`max_tokens`. A verifier is a further rule of the same shape (an answer in, a reason to
escalate or None out) should a deployment have one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CascadePolicy:
    min_mean_logprob: float = -0.35
    min_token_logprob: float | None = None
    escalate_on_length: bool = True


@dataclass(frozen=True)
class Confidence:
    """What one answer says about itself."""

    mean_logprob: float | None
    min_logprob: float | None
    finish_reason: str


def escalation_reason(confidence: Confidence, policy: CascadePolicy) -> str | None:
    """Why this answer should go to the next tier, or None to keep it."""
    if policy.escalate_on_length and confidence.finish_reason == "length":
        return "the answer was cut off at max_tokens"
    if confidence.mean_logprob is None:
        # An empty answer has no token to be confident about.
        return "no tokens to judge confidence by"
    if confidence.mean_logprob < policy.min_mean_logprob:
        return (f"mean token logprob {confidence.mean_logprob:.3f} < "
                f"{policy.min_mean_logprob:.3f}")
    if (policy.min_token_logprob is not None and confidence.min_logprob is not None
            and confidence.min_logprob < policy.min_token_logprob):
        return (f"lowest token logprob {confidence.min_logprob:.3f} < "
                f"{policy.min_token_logprob:.3f}")
    return None


def next_tier(tiers: Sequence[str], model: str) -> str | None:
    """The tier after `model`, or None when it is the last (or not a tier at all): a
    cascade's last answer is kept whatever its confidence."""
    if model not in tiers:
        return None
    index = list(tiers).index(model)
    return tiers[index + 1] if index + 1 < len(tiers) else None
