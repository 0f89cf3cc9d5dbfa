"""Cost reports from the ledger's daily rollup: cost, the naive counterfactual and the
savings by mechanism, grouped by tenant, model, feature tag or day; cost per request,
tokens per dollar, the top cost drivers and a baseline-vs-current comparison of two time
windows. Pure: the rows come from `models.report_queries`.

Every group and every total is an exact Decimal sum of the rows it is made of, so a
report's groups add up to its total to the cent (and to the last stored digit).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ledger.attribution import MECHANISMS
from ledger.pricing import (
    SERVED_BY_ENGINE,
    SERVED_BY_EXACT_CACHE,
    SERVED_BY_SEMANTIC_CACHE,
    SERVED_BY_SINGLE_FLIGHT,
)
from ledger.savings import SavingsTotals

GROUPINGS = ("tenant", "model", "feature", "day")
SERVED_BY = (SERVED_BY_ENGINE, SERVED_BY_EXACT_CACHE, SERVED_BY_SEMANTIC_CACHE,
             SERVED_BY_SINGLE_FLIGHT)
UNTAGGED = ""  # the feature of jobs without the feature tag
FAILED = "failed"


def _plain(value: Decimal) -> str:
    return f"{value:f}"


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass(frozen=True)
class Usage:
    """Sums over ledger rows (and, for `failed_unbilled`, failed jobs with none)."""

    jobs: int = 0  # ledger rows, cascade attempts included
    requests: int = 0  # jobs clients sent that were billed
    length_jobs: int = 0
    capped_jobs: int = 0
    failed_billed: int = 0  # requests billed with outcome "failed"
    failed_unbilled: int = 0  # failed jobs the ledger has no row for
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    engine_seconds: float = 0.0
    list_cost_usd: Decimal = Decimal(0)
    savings: SavingsTotals = field(default_factory=SavingsTotals)
    served: Mapping[str, int] = field(default_factory=dict)  # jobs by how they were served

    @property
    def cost_usd(self) -> Decimal:
        return self.savings.cost_usd

    def __add__(self, other: Usage) -> Usage:
        served = dict(self.served)
        for name, count in other.served.items():
            served[name] = served.get(name, 0) + count
        return Usage(
            jobs=self.jobs + other.jobs, requests=self.requests + other.requests,
            length_jobs=self.length_jobs + other.length_jobs,
            capped_jobs=self.capped_jobs + other.capped_jobs,
            failed_billed=self.failed_billed + other.failed_billed,
            failed_unbilled=self.failed_unbilled + other.failed_unbilled,
            input_tokens=self.input_tokens + other.input_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            engine_seconds=self.engine_seconds + other.engine_seconds,
            list_cost_usd=self.list_cost_usd + other.list_cost_usd,
            savings=self.savings + other.savings, served=served)

    @property
    def all_requests(self) -> int:
        """Requests billed plus failed ones that were not."""
        return self.requests + self.failed_unbilled

    @property
    def cost_per_request_usd(self) -> Decimal | None:
        return self.cost_usd / self.requests if self.requests else None

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def tokens_per_dollar(self) -> float | None:
        return float(self.tokens / self.cost_usd) if self.cost_usd else None

    @property
    def failure_rate(self) -> float | None:
        return _ratio(self.failed_billed + self.failed_unbilled, self.all_requests)

    @property
    def length_rate(self) -> float | None:
        """Share of billed jobs whose answer stopped at max_tokens."""
        return _ratio(self.length_jobs, self.jobs)

    def hit_rate(self, served_by: str) -> float | None:
        """Share of billed jobs answered by `served_by` (a cache, single-flight)."""
        return _ratio(self.served.get(served_by, 0), self.jobs)

    def as_dict(self) -> dict[str, Any]:
        per_request = self.cost_per_request_usd
        return {
            "jobs": self.jobs, "requests": self.requests,
            "failed_jobs": self.failed_billed + self.failed_unbilled,
            "length_jobs": self.length_jobs, "capped_jobs": self.capped_jobs,
            "input_tokens": self.input_tokens, "cached_tokens": self.cached_tokens,
            "output_tokens": self.output_tokens,
            "engine_seconds": round(self.engine_seconds, 6),
            "cost_usd": _plain(self.cost_usd),
            "list_cost_usd": _plain(self.list_cost_usd),
            **self.savings.as_dict(),
            "cost_per_request_usd": _plain(per_request) if per_request is not None else None,
            "tokens_per_dollar": self.tokens_per_dollar,
            "failure_rate": self.failure_rate,
            "length_rate": self.length_rate,
            "served_by": {name: self.served.get(name, 0) for name in SERVED_BY},
            "hit_rates": {name: self.hit_rate(name) for name in SERVED_BY
                          if name != SERVED_BY_ENGINE},
        }


@dataclass(frozen=True)
class RollupRow:
    """Sums of the daily rollup for one value of each key it was grouped by (any of
    GROUPINGS; the query groups in SQL, so a month is a few rows, not thousands)."""

    keys: Mapping[str, str]
    usage: Usage

    def key(self, grouping: str) -> str:
        if grouping not in GROUPINGS:
            raise ValueError(f"unknown grouping {grouping!r}")
        if grouping not in self.keys:
            raise ValueError(f"the rows were not grouped by {grouping!r}")
        return self.keys[grouping]


def rollup_usage(*, jobs: int, requests: int, length_jobs: int, capped_jobs: int,
                 failed_billed: int, input_tokens: int, cached_tokens: int,
                 output_tokens: int, engine_seconds: float, served: Mapping[str, int],
                 money: Mapping[str, Decimal]) -> Usage:
    """Rollup sums as `Usage`; `money` has the ledger's money column names."""
    return Usage(
        jobs=jobs, requests=requests, length_jobs=length_jobs, capped_jobs=capped_jobs,
        failed_billed=failed_billed, input_tokens=input_tokens, cached_tokens=cached_tokens,
        output_tokens=output_tokens, engine_seconds=engine_seconds,
        list_cost_usd=money.get("list_cost_usd", Decimal(0)),
        savings=SavingsTotals.of_row(money), served=dict(served))


@dataclass(frozen=True)
class ReportLine:
    key: str
    usage: Usage

    def as_dict(self, grouping: str) -> dict[str, Any]:
        return {grouping: self.key, **self.usage.as_dict()}


def total(rows: Iterable[RollupRow]) -> Usage:
    result = Usage()
    for row in rows:
        result = result + row.usage
    return result


def group(rows: Iterable[RollupRow], grouping: str) -> list[ReportLine]:
    """Rows summed per value of `grouping`: days in date order, the rest by cost, highest
    first (ties by name)."""
    sums: dict[str, Usage] = {}
    for row in rows:
        key = row.key(grouping)
        sums[key] = sums.get(key, Usage()) + row.usage
    lines = [ReportLine(key, usage) for key, usage in sums.items()]
    if grouping == "day":
        return sorted(lines, key=lambda line: line.key)
    return sorted(lines, key=lambda line: (-line.usage.cost_usd, line.key))


@dataclass(frozen=True)
class Driver:
    """A (tenant, model, feature) and what it cost, with its share of all the cost."""

    tenant: str
    model: str
    feature: str
    usage: Usage
    share: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "model": self.model, "feature": self.feature,
                "share_of_cost": self.share, **self.usage.as_dict()}


def top_drivers(rows: Sequence[RollupRow], limit: int) -> list[Driver]:
    """The `limit` costliest (tenant, model, feature) combinations."""
    sums: dict[tuple[str, str, str], Usage] = {}
    for row in rows:
        key = (row.key("tenant"), row.key("model"), row.key("feature"))
        sums[key] = sums.get(key, Usage()) + row.usage
    whole = total(rows).cost_usd
    ranked = sorted(sums.items(), key=lambda item: (-item[1].cost_usd, item[0]))[:limit]
    return [Driver(t, m, f, usage, float(usage.cost_usd / whole) if whole else None)
            for (t, m, f), usage in ranked]


@dataclass(frozen=True)
class Change:
    """One measure in both windows; `change` is (current - baseline) / baseline."""

    name: str
    baseline: float | None
    current: float | None

    @property
    def change(self) -> float | None:
        if self.baseline is None or self.current is None or self.baseline == 0:
            return None
        return (self.current - self.baseline) / self.baseline

    def as_dict(self) -> dict[str, Any]:
        return {"measure": self.name, "baseline": self.baseline, "current": self.current,
                "change": self.change}


def _as_float(value: Decimal | None) -> float | None:
    return float(value) if value is not None else None


def compare(baseline: Usage, current: Usage) -> list[Change]:
    """The cost playbook's "measure impact": the same measures over two windows."""
    return [
        Change("requests", baseline.all_requests, current.all_requests),
        Change("cost_usd", float(baseline.cost_usd), float(current.cost_usd)),
        Change("cost_per_request_usd", _as_float(baseline.cost_per_request_usd),
               _as_float(current.cost_per_request_usd)),
        Change("tokens_per_dollar", baseline.tokens_per_dollar, current.tokens_per_dollar),
        Change("saved_vs_naive_fraction", baseline.savings.saved_fraction,
               current.savings.saved_fraction),
        Change("output_tokens_per_request",
               baseline.output_tokens / baseline.requests if baseline.requests else None,
               current.output_tokens / current.requests if current.requests else None),
        Change("failure_rate", baseline.failure_rate, current.failure_rate),
        Change("length_rate", baseline.length_rate, current.length_rate),
        *(Change(f"{name}_hit_rate", baseline.hit_rate(name), current.hit_rate(name))
          for name in SERVED_BY if name != SERVED_BY_ENGINE),
    ]


def money_columns() -> tuple[str, ...]:
    """The rollup's money columns, as the ledger names them."""
    return ("cost_usd", "list_cost_usd", "naive_cost_usd",
            *(f"saving_{m}_usd" for m in MECHANISMS), "unexplained_usd")
