"""Sums of ledger rows for a batch, a submission or a tenant, in one query each: the
totals people read are always the exact sum of the rows they are made of."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, func, select, true
from sqlalchemy.orm import Session

from ledger.attribution import MECHANISMS, saving_column
from ledger.savings import SavingsTotals
from models.tables import LedgerEntry


@dataclass(frozen=True)
class LedgerSums:
    jobs: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    list_cost_usd: Decimal = Decimal(0)
    savings: SavingsTotals = field(default_factory=SavingsTotals)


def _sum(column: Any) -> ColumnElement[Decimal]:
    return func.coalesce(func.sum(column), 0)


def ledger_sums(session: Session, *, tenant_id: uuid.UUID | None = None,
                submission_id: uuid.UUID | None = None, batch_id: uuid.UUID | None = None
                ) -> LedgerSums:
    """The sums of every ledger row matching all the given filters (none: the whole
    ledger)."""
    where: ColumnElement[bool] = true()
    if tenant_id is not None:
        where = where & (LedgerEntry.tenant_id == tenant_id)
    if submission_id is not None:
        where = where & (LedgerEntry.submission_id == submission_id)
    if batch_id is not None:
        where = where & (LedgerEntry.batch_id == batch_id)
    savings = [getattr(LedgerEntry, saving_column(m)) for m in MECHANISMS]
    row = session.execute(
        select(func.count(), _sum(LedgerEntry.input_tokens), _sum(LedgerEntry.cached_tokens),
               _sum(LedgerEntry.output_tokens), _sum(LedgerEntry.cost_usd),
               _sum(LedgerEntry.list_cost_usd), _sum(LedgerEntry.naive_cost_usd),
               _sum(LedgerEntry.unexplained_usd), *(_sum(c) for c in savings))
        .where(where)
    ).one()
    jobs, input_tokens, cached, output, cost, list_cost, naive, unexplained = row[:8]
    return LedgerSums(
        jobs=int(jobs), input_tokens=int(input_tokens), cached_tokens=int(cached),
        output_tokens=int(output), cost_usd=Decimal(cost), list_cost_usd=Decimal(list_cost),
        savings=SavingsTotals(
            cost_usd=Decimal(cost), naive_cost_usd=Decimal(naive),
            savings={m: Decimal(v) for m, v in zip(MECHANISMS, row[8:], strict=True)},
            unexplained_usd=Decimal(unexplained)),
    )
