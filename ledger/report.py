"""Renders a finished submission: results as JSONL, the ledger as JSON and CSV. Pure."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from ledger.attribution import MECHANISMS, SAVING_COLUMNS, saving_column
from ledger.pricing import (
    SERVED_BY_ENGINE,
    SERVED_BY_EXACT_CACHE,
    SERVED_BY_SEMANTIC_CACHE,
    SERVED_BY_SINGLE_FLIGHT,
)
from ledger.savings import SavingsTotals
from ledger.spreadsheet import csv_bytes


@dataclass(frozen=True)
class JobRecord:
    """Everything the outputs say about one job, whatever happened to it."""

    job_id: str
    line: int
    custom_id: str | None
    model: str
    status: str
    tags: dict[str, Any]
    text: str | None
    finish_reason: str | None
    error: dict[str, Any] | None
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    engine_seconds: float
    cost_usd: Decimal
    list_cost_usd: Decimal
    billed: bool  # False when no ledger row exists (the job never ran to completion)
    # "engine"; "single_flight": answered from an identical job's run in flight with it;
    # "exact_cache": answered at intake from the result cache. Either way `source_job_id`
    # is the job whose run it was.
    served_by: str = "engine"
    single_flight_saved_usd: Decimal = Decimal(0)  # what penny did not spend thanks to that
    cache_saved_usd: Decimal = Decimal(0)  # what producing a cached answer cost
    source_job_id: str | None = None
    input_row: list[str] | None = None  # a CSV upload's row, cell by cell
    # The counterfactual (ledger.attribution): what the naive way would have cost, the
    # saving by mechanism and what the cost model could not explain, and the versions of
    # price card and calibration it was modelled with.
    naive_cost_usd: Decimal = Decimal(0)
    savings: Mapping[str, Decimal] = field(default_factory=dict)
    unexplained_usd: Decimal = Decimal(0)
    baseline_model: str | None = None
    price_card_id: int | None = None
    calibration_id: int | None = None
    # How auto or cascade chose the tier ("cascade: escalated ..." on a cascade attempt,
    # whose status is "escalated": billed here, answered on a later line's model).
    route: str | None = None
    # "semantic_cache": the entry whose answer (to a close question) served it, and the
    # similarity it was served at.
    cache_entry_id: str | None = None
    cache_similarity: float | None = None

    def column(self, name: str) -> Any:
        if name in _SAVING_BY_COLUMN:
            return self.savings.get(_SAVING_BY_COLUMN[name], Decimal(0))
        return getattr(self, name)

    def cost_columns(self) -> dict[str, Any]:
        return {"cost_usd": self.cost_usd, "naive_cost_usd": self.naive_cost_usd,
                "unexplained_usd": self.unexplained_usd,
                **{c: self.column(c) for c in SAVING_COLUMNS}}


_SAVING_BY_COLUMN = {saving_column(m): m for m in MECHANISMS}

ESCALATED = "escalated"

# The counterfactual columns come last, so the earlier columns keep their positions.
LEDGER_COLUMNS = (
    "job_id", "line", "custom_id", "model", "status", "input_tokens", "cached_tokens",
    "output_tokens", "engine_seconds", "cost_usd", "list_cost_usd", "served_by",
    "single_flight_saved_usd", "cache_saved_usd", "source_job_id",
    "naive_cost_usd", *SAVING_COLUMNS, "unexplained_usd", "baseline_model", "price_card_id",
    "calibration_id", "route", "cache_entry_id", "cache_similarity",
)


def results_jsonl(records: Sequence[JobRecord]) -> bytes:
    lines = []
    for r in records:
        if r.status == ESCALATED:  # its job has a line of its own: the answer it ended with
            continue
        line: dict[str, Any] = {
            "job_id": r.job_id, "line": r.line, "custom_id": r.custom_id, "model": r.model,
            "status": r.status, "metadata": r.tags,
        }
        if r.error is None:
            line["response"] = {"text": r.text, "finish_reason": r.finish_reason}
            line["usage"] = {
                "prompt_tokens": r.input_tokens, "cached_tokens": r.cached_tokens,
                "completion_tokens": r.output_tokens,
            }
            line["served_by"] = r.served_by
            line["source_job_id"] = r.source_job_id
            if r.cache_entry_id is not None:
                line["cache_entry_id"] = r.cache_entry_id
                line["cache_similarity"] = r.cache_similarity
            line["error"] = None
        else:
            line["response"] = None
            line["error"] = r.error
        lines.append(json.dumps(line, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode()


@dataclass(frozen=True)
class LedgerTotals:
    jobs: int
    succeeded: int
    failed: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    engine_seconds: float
    cost_usd: Decimal
    list_cost_usd: Decimal
    single_flight_saved_usd: Decimal = Decimal(0)
    single_flight_jobs: int = 0
    cache_saved_usd: Decimal = Decimal(0)
    exact_cache_jobs: int = 0
    savings: SavingsTotals = field(default_factory=SavingsTotals)
    # Jobs the engine ran while their model had no calibration: no saving is claimed.
    unmodelled_jobs: int = 0
    escalated_attempts: int = 0  # cascade answers paid for and passed to the next tier
    semantic_cache_jobs: int = 0

    @property
    def cached_share(self) -> float:
        return self.cached_tokens / self.input_tokens if self.input_tokens else 0.0


def totals(records: Sequence[JobRecord]) -> LedgerTotals:
    billed = [r for r in records if r.billed]
    jobs = [r for r in records if r.status != ESCALATED]
    return LedgerTotals(
        jobs=len(jobs),
        succeeded=sum(1 for r in jobs if r.status == "succeeded"),
        failed=sum(1 for r in jobs if r.status != "succeeded"),
        input_tokens=sum(r.input_tokens for r in billed),
        cached_tokens=sum(r.cached_tokens for r in billed),
        output_tokens=sum(r.output_tokens for r in billed),
        engine_seconds=sum(r.engine_seconds for r in billed),
        cost_usd=sum((r.cost_usd for r in billed), Decimal(0)),
        list_cost_usd=sum((r.list_cost_usd for r in billed), Decimal(0)),
        single_flight_saved_usd=sum((r.single_flight_saved_usd for r in billed), Decimal(0)),
        single_flight_jobs=sum(1 for r in billed if r.served_by == SERVED_BY_SINGLE_FLIGHT),
        cache_saved_usd=sum((r.cache_saved_usd for r in billed), Decimal(0)),
        exact_cache_jobs=sum(1 for r in billed if r.served_by == SERVED_BY_EXACT_CACHE),
        savings=SavingsTotals.of_rows(r.cost_columns() for r in billed),
        unmodelled_jobs=sum(1 for r in billed
                            if r.served_by == SERVED_BY_ENGINE and r.calibration_id is None),
        escalated_attempts=len(records) - len(jobs),
        semantic_cache_jobs=sum(1 for r in billed if r.served_by == SERVED_BY_SEMANTIC_CACHE),
    )


def _plain(value: Any) -> Any:
    """Money as a plain decimal string: str() would write 2.2e-7 dollars (an embedding's
    cost) as "2.200E-7"."""
    return f"{value:f}" if isinstance(value, Decimal) else value


def _ledger_row(r: JobRecord) -> dict[str, Any]:
    return {column: _plain(r.column(column)) for column in LEDGER_COLUMNS}


def ledger_json(submission_id: str, records: Sequence[JobRecord]) -> bytes:
    total = totals(records)
    summary = {key: _plain(value) for key, value in asdict(total).items()
               if key != "savings"}
    # The counterfactual leads: what the naive way would have cost and who saved what.
    summary = {**total.savings.as_dict(), **summary}
    document = {
        "submission_id": submission_id,
        "totals": summary,
        "entries": [_ledger_row(r) for r in records if r.billed],
    }
    return json.dumps(document, default=str, indent=2).encode()


def ledger_csv(records: Sequence[JobRecord]) -> bytes:
    return csv_bytes(LEDGER_COLUMNS, (_ledger_row(r) for r in records if r.billed))
