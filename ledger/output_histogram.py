"""Output-token histograms: what the max_tokens audit reads instead of a month of ledger rows.

The rollup `ledger_output_daily` counts engine-run jobs per day, tenant, model, feature,
output-token bucket and requested-max_tokens bucket (the `ledger_output_add` trigger, in the
statement that inserts the ledger rows). This module is the pure side: the bucket scheme
(the database's `penny_token_bucket` computes the same one) and what the audit derives from
the buckets.

Buckets. A bucket is named by its edge `e` and holds the counts from `e + 1` to
`e + width(e)`: one count per bucket up to 16, then 8 buckets per doubling (17-18, 19-20,
..., 129-144, 145-160, ..., 257-288, ...). So a bucket is never wider than an eighth of
the counts in it, and every multiple of 16 up to 128, and every power of two, is an edge.

What that allows:
- A percentile is read as the top of the bucket holding the true (nearest-rank)
  percentile, or the largest count seen in that bucket if smaller: never below the true
  value, exact up to 16 tokens and less than 12.5% above it beyond.
- Totals (jobs, finish_reason=length, capped jobs, output tokens, cost) are sums, exact.
- The recommendation (p99 x margin, rounded up to 16 tokens, then up to a bucket edge) is
  never below the true p99, and because it is an edge, the jobs that made more and the
  tokens they made beyond it are exact sums of whole buckets.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from ledger.max_tokens_audit import FeatureOutputs, recommend_max_tokens

EXACT_UP_TO = 16  # counts up to this have a bucket each
SUB_BUCKETS_BITS = 3  # 2**3 = 8 buckets per doubling beyond


def bucket_of(tokens: int) -> int:
    """The edge of the bucket holding `tokens` (-1 for 0)."""
    if tokens <= EXACT_UP_TO:
        return tokens - 1
    below = tokens - 1
    shift = below.bit_length() - 1 - SUB_BUCKETS_BITS
    return (below >> shift) << shift


def bucket_width(edge: int) -> int:
    if edge < EXACT_UP_TO:
        return 1
    return 1 << (edge.bit_length() - 1 - SUB_BUCKETS_BITS)


def bucket_top(edge: int) -> int:
    """The largest count the bucket holds."""
    return edge + bucket_width(edge)


def edge_at_or_above(tokens: int) -> int:
    """The smallest bucket edge >= `tokens`: every count above it is in a whole bucket."""
    if tokens < EXACT_UP_TO:
        return max(tokens, -1)
    width = bucket_width(tokens)
    return math.ceil(tokens / width) * width


@dataclass(frozen=True)
class HistogramRow:
    """One (tenant, feature, output bucket, requested bucket) of the rollup over a window."""

    tenant: str
    feature: str
    output_edge: int
    requested_edge: int
    jobs: int
    length_jobs: int
    capped_jobs: int
    output_tokens: int
    max_output: int
    min_requested: int
    max_requested: int
    cost_usd: Decimal


@dataclass
class _Bucket:
    jobs: int = 0
    tokens: int = 0
    low: int | None = None
    high: int = 0


@dataclass
class FeatureHistogram:
    """One tenant's feature over a window: output and requested max_tokens histograms and
    exact totals."""

    tenant: str
    feature: str
    jobs: int = 0
    length_jobs: int = 0
    capped_jobs: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    outputs: dict[int, _Bucket] = field(default_factory=dict)
    requested: dict[int, _Bucket] = field(default_factory=dict)

    def add(self, row: HistogramRow) -> None:
        self.jobs += row.jobs
        self.length_jobs += row.length_jobs
        self.capped_jobs += row.capped_jobs
        self.output_tokens += row.output_tokens
        self.cost_usd += row.cost_usd
        out = self.outputs.setdefault(row.output_edge, _Bucket())
        out.jobs += row.jobs
        out.tokens += row.output_tokens
        out.high = max(out.high, row.max_output)
        asked = self.requested.setdefault(row.requested_edge, _Bucket())
        asked.jobs += row.jobs
        asked.low = row.min_requested if asked.low is None else min(asked.low,
                                                                     row.min_requested)
        asked.high = max(asked.high, row.max_requested)

    @staticmethod
    def _rank_edge(buckets: dict[int, _Bucket], fraction: float) -> int | None:
        """The edge of the bucket holding the nearest-rank `fraction` percentile."""
        total = sum(b.jobs for b in buckets.values())
        if total == 0:
            return None
        rank = max(1, math.ceil(fraction * total))
        seen = 0
        for edge in sorted(buckets):
            seen += buckets[edge].jobs
            if seen >= rank:
                return edge
        return None  # not reached: the ranks add up to the total

    def output_percentile(self, fraction: float) -> int:
        """At least the nearest-rank percentile, by less than an eighth (exact to 16)."""
        edge = self._rank_edge(self.outputs, fraction)
        if edge is None:
            return 0
        return min(bucket_top(edge), self.outputs[edge].high)

    def requested_median(self) -> int:
        """The smallest max_tokens asked for in the bucket holding the median request:
        exact when that bucket saw one value (a feature's jobs usually ask for the same),
        otherwise at most the true median, so a cap is recommended only when clearly below
        what jobs ask for."""
        edge = self._rank_edge(self.requested, 0.5)
        low = None if edge is None else self.requested[edge].low
        return 0 if low is None else low

    def max_requested(self) -> int:
        return max((b.high for b in self.requested.values()), default=0)

    def max_output(self) -> int:
        return max((b.high for b in self.outputs.values()), default=0)

    def beyond(self, cap_edge: int) -> tuple[int, int]:
        """The jobs that made more than `cap_edge` tokens (a bucket edge) and the tokens
        they made beyond it: exact, since those jobs fill whole buckets."""
        jobs = sum(b.jobs for e, b in self.outputs.items() if e >= cap_edge)
        tokens = sum(b.tokens - b.jobs * cap_edge for e, b in self.outputs.items()
                     if e >= cap_edge)
        return jobs, tokens

    def feature_outputs(self) -> FeatureOutputs:
        return FeatureOutputs(
            tenant=self.tenant, feature=self.feature, jobs=self.jobs,
            length_jobs=self.length_jobs, capped_jobs=self.capped_jobs,
            p50_output=self.output_percentile(0.5), p95_output=self.output_percentile(0.95),
            p99_output=self.output_percentile(0.99), max_output=self.max_output(),
            p50_requested=self.requested_median(), max_requested=self.max_requested(),
            output_tokens=self.output_tokens, cost_usd=self.cost_usd)


def histograms(rows: Iterable[HistogramRow]) -> list[FeatureHistogram]:
    """Per tenant and feature, most costly first (then by name)."""
    found: dict[tuple[str, str], FeatureHistogram] = {}
    for row in rows:
        key = (row.tenant, row.feature)
        found.setdefault(key, FeatureHistogram(row.tenant, row.feature)).add(row)
    return sorted(found.values(), key=lambda h: (-h.cost_usd, h.tenant, h.feature))


def recommend_from_histogram(histogram: FeatureHistogram, margin: float) -> int | None:
    """The audit's recommendation read from buckets: the p99 (never below the true one)
    times the margin, rounded up to 16 tokens and then to a bucket edge; None when it would
    not be below the max_tokens the feature's jobs usually ask for."""
    if histogram.jobs == 0:
        return None
    cap = edge_at_or_above(recommend_max_tokens(histogram.output_percentile(0.99), margin))
    return cap if cap < histogram.requested_median() else None
