"""Pure pricing: how a batch's engine time is shared out, and what each job cost."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ledger.attribution import (
    EXACT_CACHE,
    SEMANTIC_CACHE,
    SINGLE_FLIGHT,
    attribute_served_without_running,
)
from penny.settings import ModelPrice

_MILLION = Decimal(1_000_000)
_SECONDS_PER_HOUR = Decimal(3600)
# Ten decimal places: the ledger column's scale. Sums stay exact at that precision.
_QUANTUM = Decimal("0.0000000001")


@dataclass(frozen=True)
class TokenUsage:
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int

    @property
    def computed_tokens(self) -> int:
        """Tokens the engine actually had to process: uncached prompt plus output."""
        return self.prompt_tokens - self.cached_tokens + self.output_tokens


def share_engine_seconds(total_seconds: float, usages: Sequence[TokenUsage]) -> list[float]:
    """Split a batch's engine seconds across its jobs by the tokens each made the engine
    compute, so a job whose prompt came from the prefix cache pays less.

    The shares add up to `total_seconds` (up to float rounding); a batch where nothing was
    computed is split evenly.
    """
    if not usages:
        return []
    weights = [max(u.computed_tokens, 0) for u in usages]
    weight_sum = sum(weights)
    if weight_sum == 0:
        return [total_seconds / len(usages)] * len(usages)
    return [total_seconds * w / weight_sum for w in weights]


@dataclass(frozen=True)
class JobCost:
    cost_usd: Decimal
    list_cost_usd: Decimal


def price_job(usage: TokenUsage, engine_seconds: float, price: ModelPrice) -> JobCost:
    """The job's real cost (its engine time at the hardware rate) and what the same tokens
    would cost at the list prices of a hosted API."""
    cost = Decimal(repr(engine_seconds)) * price.engine_hour_usd / _SECONDS_PER_HOUR
    uncached = usage.prompt_tokens - usage.cached_tokens
    list_cost = (
        Decimal(uncached) * price.list_input_usd_per_mtok
        + Decimal(usage.cached_tokens) * price.list_cached_input_usd_per_mtok
        + Decimal(usage.output_tokens) * price.list_output_usd_per_mtok
    ) / _MILLION
    return JobCost(cost_usd=cost.quantize(_QUANTUM), list_cost_usd=list_cost.quantize(_QUANTUM))


SERVED_BY_ENGINE = "engine"
SERVED_BY_SINGLE_FLIGHT = "single_flight"


def copied_answer_ledger(leader: Mapping[str, Any], leader_id: uuid.UUID) -> dict[str, Any]:
    """The ledger row of a copy answered from its leader's generation (single-flight).

    It used no engine time, so it costs nothing; `single_flight_saved_usd` is what
    generating it again would have cost (the leader's cost). The tokens are the leader's,
    so the list price still says what a hosted API would have charged for this request.
    """
    naive = Decimal(leader.get("naive_cost_usd", leader["cost_usd"]))
    return {
        **leader,
        "engine_seconds": 0.0,
        "cost_usd": Decimal(0),
        "single_flight_saved_usd": Decimal(leader["cost_usd"]),
        "served_by": SERVED_BY_SINGLE_FLIGHT,
        "source_job_id": leader_id,
        # Against the naive way it saved all the leader would have cost alone.
        **attribute_served_without_running(naive, SINGLE_FLIGHT).columns(),
    }


SERVED_BY_EXACT_CACHE = "exact_cache"
SERVED_BY_SEMANTIC_CACHE = "semantic_cache"


def cache_hit_ledger(
    *, model: str, prompt_tokens: int, cached_tokens: int, output_tokens: int,
    source_cost_usd: Decimal, source_list_cost_usd: Decimal, source_job_id: uuid.UUID,
    source_naive_cost_usd: Decimal | None = None, costed_with: Mapping[str, Any] | None = None,
    mechanism: str = EXACT_CACHE,
) -> dict[str, Any]:
    """The ledger row of a job answered from the exact result cache (or, as `mechanism`
    says, the semantic one).

    No engine ran for it, so it costs nothing; `cache_saved_usd` is what producing the
    answer cost (the source job's cost). The tokens are the source's, as the job would
    have used them, so the list price still says what a hosted API would have charged.
    Against the naive way it saved the source's naive cost (its cost when that is
    unknown); `costed_with` carries the source row's card, calibration and baseline.
    """
    naive = source_naive_cost_usd if source_naive_cost_usd is not None else source_cost_usd
    return {
        **(costed_with or {}),
        **attribute_served_without_running(naive, mechanism).columns(),
        "model": model,
        "input_tokens": prompt_tokens,
        "cached_tokens": cached_tokens,
        "output_tokens": output_tokens,
        "engine_seconds": 0.0,
        "cost_usd": Decimal(0),
        "list_cost_usd": source_list_cost_usd,
        "cache_saved_usd": source_cost_usd,
        "served_by": SERVED_BY_EXACT_CACHE,
        "source_job_id": source_job_id,
    }


def semantic_hit_ledger(
    *, model: str, prompt_tokens: int, cached_tokens: int, output_tokens: int,
    source_cost_usd: Decimal, source_list_cost_usd: Decimal, source_job_id: uuid.UUID,
    entry_id: uuid.UUID, similarity: float,
) -> dict[str, Any]:
    """The ledger row of a job answered from the semantic cache: as an exact-cache hit
    (costs 0, saves what producing the answer cost), plus the entry that served it and the
    similarity it was served at."""
    return {
        **cache_hit_ledger(model=model, prompt_tokens=prompt_tokens,
                           cached_tokens=cached_tokens, output_tokens=output_tokens,
                           source_cost_usd=source_cost_usd,
                           source_list_cost_usd=source_list_cost_usd,
                           source_job_id=source_job_id, mechanism=SEMANTIC_CACHE),
        "served_by": SERVED_BY_SEMANTIC_CACHE,
        "cache_entry_id": entry_id,
        "cache_similarity": similarity,
    }
