"""The max_tokens audit, per feature: how often answers stop at max_tokens, how many output
tokens jobs really make (p50/p95/p99) against the max_tokens they ask for, a recommended
max_tokens and what applying it would save. Pure: the numbers come from
`models.audit_queries`.

The recommendation is the p99 of output tokens times a margin (default 1.25), rounded up
to a multiple of 16 tokens (and up to a histogram bucket's edge: `ledger.output_histogram`)
— kept only when it is below the max_tokens the feature's jobs usually ask for (their
median request), since otherwise no cap would change anything.

What it would save: the output tokens the jobs made beyond the recommendation (the ones
the cap would have cut), priced at the feature's cost per output token (its cost divided
by its output tokens). All the cost is charged to output tokens there, prefill included,
so this is an upper bound on the saving; the cut answers are the price (about 1% of jobs
at the p99, each visible with finish_reason "length").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

DEFAULT_MARGIN = 1.25
TOKEN_STEP = 16
_CENT_FRACTIONS = Decimal("0.0000000001")


def recommend_max_tokens(p99_output_tokens: int, margin: float = DEFAULT_MARGIN,
                         step: int = TOKEN_STEP) -> int:
    """p99 x margin, rounded up to a multiple of `step` (at least one step)."""
    if margin < 1:
        raise ValueError("the margin must be at least 1")
    wanted = math.ceil(p99_output_tokens * margin)
    return max(step, math.ceil(wanted / step) * step)


def percentile(sorted_values: list[int], fraction: float) -> int:
    """The nearest-rank percentile of ascending values (what Postgres' percentile_disc
    returns), 0 for none."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(frozen=True)
class FeatureOutputs:
    """What the engine-run jobs of one tenant's feature made in the window."""

    tenant: str
    feature: str
    jobs: int
    length_jobs: int  # finish_reason "length"
    capped_jobs: int  # run under a cap lower than they asked for
    p50_output: int
    p95_output: int
    p99_output: int
    max_output: int
    p50_requested: int  # the max_tokens clients asked for
    max_requested: int
    output_tokens: int
    cost_usd: Decimal


@dataclass(frozen=True)
class AuditLine:
    outputs: FeatureOutputs
    recommended_max_tokens: int | None
    cut_jobs: int  # jobs that made more than the recommendation
    excess_output_tokens: int  # the tokens they made beyond it
    saving_usd: Decimal
    current_cap: int | None = None

    @property
    def length_rate(self) -> float | None:
        o = self.outputs
        return o.length_jobs / o.jobs if o.jobs else None

    def as_dict(self) -> dict[str, Any]:
        o = self.outputs
        return {
            "tenant": o.tenant, "feature": o.feature, "jobs": o.jobs, "length_jobs": o.length_jobs,
            "length_rate": self.length_rate, "capped_jobs": o.capped_jobs,
            "output_tokens": {"p50": o.p50_output, "p95": o.p95_output, "p99": o.p99_output,
                              "max": o.max_output},
            "requested_max_tokens": {"p50": o.p50_requested, "max": o.max_requested},
            "recommended_max_tokens": self.recommended_max_tokens,
            "cut_jobs": self.cut_jobs, "excess_output_tokens": self.excess_output_tokens,
            "estimated_saving_usd": f"{self.saving_usd:f}",
            "current_cap": self.current_cap,
        }


def audit_line(outputs: FeatureOutputs, recommended: int | None, cut_jobs: int,
               excess_output_tokens: int, current_cap: int | None = None) -> AuditLine:
    """`cut_jobs` and `excess_output_tokens` are counted against `recommended`."""
    if recommended is None or outputs.output_tokens == 0:
        return AuditLine(outputs, recommended, 0, 0, Decimal(0), current_cap)
    per_token = outputs.cost_usd / outputs.output_tokens
    saving = (per_token * excess_output_tokens).quantize(_CENT_FRACTIONS, ROUND_HALF_EVEN)
    return AuditLine(outputs, recommended, cut_jobs, excess_output_tokens, saving,
                     current_cap)
