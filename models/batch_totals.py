"""What one recorded batch added up to, read back from the rows it wrote: how its jobs
ended and the sums of their ledger rows. The metrics count exactly what the ledger bills."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ledger.attribution import MECHANISMS, saving_column
from ledger.pricing import SERVED_BY_ENGINE, SERVED_BY_SEMANTIC_CACHE
from models.status import TERMINAL_JOB_STATUSES
from models.tables import Job, LedgerEntry


@dataclass(frozen=True)
class BatchTotals:
    finished: dict[str, int] = field(default_factory=dict)  # job status -> jobs
    # Tokens of the rows the engine generated (copies reuse a generation: no new tokens).
    engine_input_tokens: int = 0
    engine_cached_tokens: int = 0
    engine_output_tokens: int = 0
    # Money over every row, copies included.
    cost_usd: Decimal = Decimal(0)
    list_cost_usd: Decimal = Decimal(0)
    single_flight_saved_usd: Decimal = Decimal(0)
    # The naive counterfactual and what each mechanism saved against it (ledger columns).
    naive_cost_usd: Decimal = Decimal(0)
    savings_usd: dict[str, Decimal] = field(default_factory=dict)  # mechanism -> USD
    semantic_cache_hits: int = 0  # rows answered from the semantic cache


def batch_totals(session: Session, batch_id: uuid.UUID) -> BatchTotals:
    """Read through `jobs.batch_id` (indexed) rather than the ledger's own batch column."""
    finished = session.execute(
        select(Job.status, func.count())
        .where(Job.batch_id == batch_id, Job.status.in_(list(TERMINAL_JOB_STATUSES)))
        .group_by(Job.status)
    ).all()
    engine = LedgerEntry.served_by == SERVED_BY_ENGINE
    sums = session.execute(
        select(
            func.coalesce(func.sum(LedgerEntry.input_tokens).filter(engine), 0),
            func.coalesce(func.sum(LedgerEntry.cached_tokens).filter(engine), 0),
            func.coalesce(func.sum(LedgerEntry.output_tokens).filter(engine), 0),
            func.coalesce(func.sum(LedgerEntry.cost_usd), 0),
            func.coalesce(func.sum(LedgerEntry.list_cost_usd), 0),
            func.coalesce(func.sum(LedgerEntry.single_flight_saved_usd), 0),
            func.coalesce(func.sum(LedgerEntry.naive_cost_usd), 0),
            func.count().filter(LedgerEntry.served_by == SERVED_BY_SEMANTIC_CACHE),
            *(func.coalesce(func.sum(getattr(LedgerEntry, saving_column(m))), 0)
              for m in MECHANISMS),
        )
        .join(Job, Job.id == LedgerEntry.job_id)
        .where(Job.batch_id == batch_id, LedgerEntry.batch_id == batch_id)
    ).one()
    return BatchTotals(
        finished={str(status): int(count) for status, count in finished},
        engine_input_tokens=int(sums[0]),
        engine_cached_tokens=int(sums[1]),
        engine_output_tokens=int(sums[2]),
        cost_usd=Decimal(sums[3]),
        list_cost_usd=Decimal(sums[4]),
        single_flight_saved_usd=Decimal(sums[5]),
        naive_cost_usd=Decimal(sums[6]),
        semantic_cache_hits=int(sums[7]),
        savings_usd={m: Decimal(v) for m, v in zip(MECHANISMS, sums[8:], strict=True)},
    )
