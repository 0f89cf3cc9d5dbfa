"""Renders a finished submission: results as JSONL, the ledger as JSON and CSV. Pure."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from ledger.pricing import (
    SERVED_BY_EXACT_CACHE,
    SERVED_BY_SEMANTIC_CACHE,
    SERVED_BY_SINGLE_FLIGHT,
)


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
    # "semantic_cache": the entry whose answer (to a close question) served it, and the
    # similarity it was served at.
    cache_entry_id: str | None = None
    cache_similarity: float | None = None


LEDGER_COLUMNS = (
    "job_id", "line", "custom_id", "model", "status", "input_tokens", "cached_tokens",
    "output_tokens", "engine_seconds", "cost_usd", "list_cost_usd", "served_by",
    "single_flight_saved_usd", "cache_saved_usd", "source_job_id", "cache_entry_id",
    "cache_similarity",
)


def results_jsonl(records: Sequence[JobRecord]) -> bytes:
    lines = []
    for r in records:
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
    semantic_cache_jobs: int = 0

    @property
    def cached_share(self) -> float:
        return self.cached_tokens / self.input_tokens if self.input_tokens else 0.0


def totals(records: Sequence[JobRecord]) -> LedgerTotals:
    billed = [r for r in records if r.billed]
    return LedgerTotals(
        jobs=len(records),
        succeeded=sum(1 for r in records if r.status == "succeeded"),
        failed=sum(1 for r in records if r.status != "succeeded"),
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
        semantic_cache_jobs=sum(1 for r in billed if r.served_by == SERVED_BY_SEMANTIC_CACHE),
    )


def _plain(value: Any) -> Any:
    """Money as a plain decimal string: str() would write 2.2e-7 dollars (an embedding's
    cost) as "2.200E-7"."""
    return f"{value:f}" if isinstance(value, Decimal) else value


def _ledger_row(r: JobRecord) -> dict[str, Any]:
    return {column: _plain(getattr(r, column)) for column in LEDGER_COLUMNS}


def ledger_json(submission_id: str, records: Sequence[JobRecord]) -> bytes:
    summary = {key: _plain(value) for key, value in asdict(totals(records)).items()}
    document = {
        "submission_id": submission_id,
        "totals": summary,
        "entries": [_ledger_row(r) for r in records if r.billed],
    }
    return json.dumps(document, default=str, indent=2).encode()


def ledger_csv(records: Sequence[JobRecord]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LEDGER_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in records:
        if r.billed:
            writer.writerow(_ledger_row(r))
    return buffer.getvalue().encode()
