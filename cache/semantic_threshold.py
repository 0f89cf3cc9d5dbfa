"""Similarity thresholds that adapt to observed outcomes, so the false-hit rate stays under
a budget. Pure.

In the spirit of vCache (Schroeder et al., 2025, "vCache: Verified Semantic Prompt Caching"):
one global threshold does not fit every entry, because how close a wrong question can come
depends on the cached question. Each entry keeps the outcomes seen for it: a served hit
that an audit re-ran and found to give the same answer (correct), or a different one, or an
operator's correction (wrong), each at the similarity it was served at. From those:

- an entry never serves again at or below the similarity of a wrong answer it gave
  (plus a margin): that neighbourhood is known to hold a different question;
- the base threshold rises while the observed false-hit rate of all audited hits, as the
  upper end of a Beta posterior, is over the budget: among the audited hits at or above a
  candidate threshold, the rate must be under the budget for the threshold to stand.

Thresholds only ever rise from the configured base: an outcome can be observed only where
the cache served, so nothing seen says a lower threshold would be safe.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# How far above a wrong answer's similarity an entry's threshold moves.
WRONG_MARGIN = 0.01
# Below this many audited hits the global rate says nothing and the base stands.
MIN_AUDITED = 20


@dataclass(frozen=True)
class Outcome:
    """One served hit whose correctness became known, at the similarity it was served at."""

    similarity: float
    correct: bool


def false_hit_upper_bound(wrong: int, total: int, confidence: float = 0.95) -> float:
    """An upper bound on the false-hit rate after `wrong` of `total` checked hits: the
    Wilson score interval's upper end (1.0 when nothing was checked)."""
    if total <= 0:
        return 1.0
    z = _z(confidence)
    p = wrong / total
    denominator = 1 + z * z / total
    centre = p + z * z / (2 * total)
    spread = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return min(1.0, (centre + spread) / denominator)


def _z(confidence: float) -> float:
    # One-sided normal quantiles for the confidences a budget check uses.
    table = {0.9: 1.2816, 0.95: 1.6449, 0.99: 2.3263}
    return table.get(confidence, 1.6449)


def base_threshold(
    configured: float, audited: Sequence[Outcome], budget: float, ceiling: float = 0.999
) -> float:
    """The lowest threshold, at or above `configured`, at which the audited hits served at
    or above it have a false-hit rate whose point estimate is within `budget`, and whose
    wrong answers all lie below it when the budget is otherwise unreachable. With fewer than
    MIN_AUDITED audited hits the configured threshold stands."""
    if len(audited) < MIN_AUDITED:
        return configured
    candidates = sorted({configured, *(o.similarity for o in audited if o.similarity > configured)})
    for threshold in candidates:
        above = [o for o in audited if o.similarity >= threshold]
        if len(above) < MIN_AUDITED:
            break
        wrong = sum(1 for o in above if not o.correct)
        if wrong / len(above) <= budget:
            return threshold
    # Too few audited hits remain above the last candidate to judge: stand above every
    # wrong answer seen, which is the most the evidence supports.
    worst = max((o.similarity for o in audited if not o.correct), default=configured)
    return min(ceiling, max(configured, worst + WRONG_MARGIN))


def entry_threshold(base: float, outcomes: Iterable[Outcome], ceiling: float = 0.999) -> float:
    """One entry's threshold: the base, raised above every wrong answer it has given."""
    worst = max((o.similarity for o in outcomes if not o.correct), default=None)
    if worst is None:
        return base
    return min(ceiling, max(base, worst + WRONG_MARGIN))


def should_audit(job_key: str, rate: float) -> bool:
    """Whether a hit is re-run to check it: a stable fraction `rate` of jobs, chosen by
    their id so a retried batch audits the same ones."""
    if rate <= 0:
        return False
    if rate >= 1:
        return True
    digest = hashlib.blake2b(job_key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < rate
