"""What the batch APIs say about one line of a batch, and the cost figures penny adds."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from ledger.pricing import SERVED_BY_EXACT_CACHE, SERVED_BY_SINGLE_FLIGHT
from ledger.savings import SavingsTotals


@dataclass(frozen=True)
class LineRecord:
    """One job of a batch with its result and ledger figures (zero when never billed)."""

    job_id: str
    line: int
    custom_id: str
    model: str
    status: str  # a models.status.JobStatus value
    text: str | None
    finish_reason: str | None
    error: dict[str, Any] | None
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    engine_seconds: float
    cost_usd: Decimal | None  # None: no ledger row, nothing was billed
    list_cost_usd: Decimal | None
    finished_at: datetime | None
    # "single_flight": answered from an identical job's run; "exact_cache": from the result
    # cache at intake. `source_job_id` names the job whose run it was.
    served_by: str = "engine"
    single_flight_saved_usd: Decimal = Decimal(0)
    cache_saved_usd: Decimal = Decimal(0)
    source_job_id: str | None = None
    # "semantic_cache": the entry that served it (its answer to a close question) and the
    # similarity it was served at.
    cache_entry_id: str | None = None
    cache_similarity: float | None = None
    # An embeddings line: its vectors (see compat.vectors) and the format it asked for.
    embedding: bytes | None = None
    embedding_dimensions: int | None = None
    encoding_format: str = "float"
    # Its counterfactual (zero when never billed).
    savings: SavingsTotals = field(default_factory=SavingsTotals)
    # The first answer's `logprobs.content` when the line asked for logprobs, and an n > 1
    # line's further samples (each {text, finish_reason, output_tokens, token_logprobs}).
    token_logprobs: list[dict[str, Any]] | None = None
    choices: list[dict[str, Any]] | None = None
    asked_logprobs: bool = False
    # The names of the functions the line offered as tools (empty: none offered).
    offered_tools: tuple[str, ...] = ()


@dataclass(frozen=True)
class CostFigures:
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    engine_seconds: float
    cost_usd: Decimal
    list_cost_usd: Decimal
    # What single-flight did not spend: a copy answered from an identical job's run.
    single_flight_saved_usd: Decimal = Decimal(0)
    single_flight_jobs: int = 0
    # What the exact result cache did not spend: answers kept from an earlier run.
    cache_saved_usd: Decimal = Decimal(0)
    exact_cache_jobs: int = 0
    # Against the naive counterfactual, by mechanism (ledger.savings).
    savings: SavingsTotals = field(default_factory=SavingsTotals)

    def as_dict(self) -> dict[str, Any]:
        """The `penny_cost` extension field. Money as plain decimal strings: floats would
        round it, and str() would write an embedding's 2.2e-7 dollars as "2.200E-7".

        It leads with the saving against the naive counterfactual on the same hardware, by
        mechanism. `list_cost_usd`, `saved_usd` and `saved_fraction` are the secondary
        comparison with a hosted API's list price for the same tokens."""
        saved = self.list_cost_usd - self.cost_usd
        return {
            **self.savings.as_dict(),
            "input_tokens": self.input_tokens,
            "cached_tokens": self.cached_tokens,
            "output_tokens": self.output_tokens,
            "engine_seconds": round(self.engine_seconds, 6),
            "cost_usd": f"{self.cost_usd:f}",
            "list_cost_usd": f"{self.list_cost_usd:f}",
            "saved_usd": f"{saved:f}",
            "saved_fraction": (round(float(saved / self.list_cost_usd), 4)
                               if self.list_cost_usd else None),
            "single_flight_saved_usd": f"{self.single_flight_saved_usd:f}",
            "single_flight_jobs": self.single_flight_jobs,
            "cache_saved_usd": f"{self.cache_saved_usd:f}",
            "exact_cache_jobs": self.exact_cache_jobs,
        }


def line_cost(record: LineRecord) -> CostFigures | None:
    if record.cost_usd is None or record.list_cost_usd is None:
        return None
    return CostFigures(record.prompt_tokens, record.cached_tokens, record.output_tokens,
                       record.engine_seconds, record.cost_usd, record.list_cost_usd,
                       record.single_flight_saved_usd,
                       int(record.served_by == SERVED_BY_SINGLE_FLIGHT),
                       record.cache_saved_usd,
                       int(record.served_by == SERVED_BY_EXACT_CACHE), record.savings)


def line_penny_cost(record: LineRecord) -> dict[str, Any] | None:
    """The `penny_cost` of one output line: its figures, and what served it."""
    cost = line_cost(record)
    if cost is None:
        return None
    figures = {**cost.as_dict(), "served_by": record.served_by,
               "source_job_id": record.source_job_id}
    if record.cache_entry_id is not None:
        figures["cache_entry_id"] = record.cache_entry_id
        figures["cache_similarity"] = record.cache_similarity
    return figures
