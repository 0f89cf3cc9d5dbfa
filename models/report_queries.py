"""The queries behind cost reports: the ledger's daily rollup over a window, summed in SQL
by the keys a report groups by, and the failed jobs the ledger has no row for (a report's
failure rate counts them)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, String, cast, exists, func, select, true
from sqlalchemy.orm import Session

from ledger.cost_report import (
    FAILED,
    GROUPINGS,
    SERVED_BY,
    RollupRow,
    Usage,
    money_columns,
    rollup_usage,
)
from models.status import JobStatus
from models.tables import Job, LedgerDaily, LedgerEntry, Tenant

_COUNTS = ("jobs", "requests", "length_jobs", "capped_jobs", "input_tokens", "cached_tokens",
           "output_tokens")


def day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _sum(column: Any) -> Any:
    return func.coalesce(func.sum(column), 0)


def _key_columns(by: Sequence[str]) -> list[Any]:
    columns = {"tenant": Tenant.name, "model": LedgerDaily.model,
               "feature": LedgerDaily.feature, "day": LedgerDaily.day}
    for grouping in by:
        if grouping not in GROUPINGS:
            raise ValueError(f"unknown grouping {grouping!r}")
    return [columns[g] for g in by]


def rollup_rows(session: Session, start: date, end: date, *, by: Sequence[str] = (),
                tenant_id: uuid.UUID | None = None, feature_tag: str = "feature"
                ) -> list[RollupRow]:
    """The rollup of days `start` <= day < `end` (of one tenant if given), one row per
    value of the `by` keys (none: one row), plus the window's unbilled failed jobs."""
    scope: ColumnElement[bool] = true() if tenant_id is None else (
        LedgerDaily.tenant_id == tenant_id)
    keys = _key_columns(by)
    money = money_columns()
    query = (
        select(*keys, *(_sum(getattr(LedgerDaily, c)) for c in _COUNTS),
               _sum(LedgerDaily.engine_seconds),
               *(_sum(getattr(LedgerDaily, c)) for c in money),
               *(func.sum(LedgerDaily.jobs).filter(LedgerDaily.served_by == name)
                 for name in SERVED_BY),
               func.sum(LedgerDaily.requests).filter(LedgerDaily.outcome == FAILED))
        .select_from(LedgerDaily)
        .join(Tenant, Tenant.id == LedgerDaily.tenant_id)
        .where(scope, LedgerDaily.day >= start, LedgerDaily.day < end)
    )
    if keys:
        query = query.group_by(*keys)
    rows = []
    width = len(keys)
    for r in session.execute(query):
        values = list(r)
        counts = dict(zip(_COUNTS, (int(v) for v in values[width:width + 7]), strict=True))
        at = width + 7
        engine_seconds = float(values[at])
        sums = {c: Decimal(v) for c, v in zip(money, values[at + 1:at + 1 + len(money)],
                                              strict=True)}
        at += 1 + len(money)
        served = {name: int(v or 0) for name, v in zip(SERVED_BY, values[at:at + 4],
                                                       strict=True)}
        failed = int(values[at + 4] or 0)
        if counts["jobs"] == 0 and not keys:
            continue  # an empty window: no row at all, as with keys
        usage = rollup_usage(**counts, failed_billed=failed, engine_seconds=engine_seconds,
                             served=served, money=sums)
        rows.append(RollupRow(_keys(by, values[:width]), usage))
    return rows + unbilled_failures(session, start, end, by=by, tenant_id=tenant_id,
                                    feature_tag=feature_tag)


def _keys(by: Sequence[str], values: Sequence[Any]) -> dict[str, str]:
    return {g: v.isoformat() if isinstance(v, date) else str(v)
            for g, v in zip(by, values, strict=True)}


def unbilled_failures(session: Session, start: date, end: date, *, by: Sequence[str] = (),
                      tenant_id: uuid.UUID | None = None, feature_tag: str = "feature"
                      ) -> list[RollupRow]:
    """Failed jobs finished in the window that have no ledger row, as rollup rows with
    no money, grouped by the same keys."""
    columns = {"tenant": Tenant.name, "model": Job.model,
               "feature": cast(func.left(func.coalesce(Job.tags.op("->>")(feature_tag), ""),
                                         200), String),
               "day": func.date(func.timezone("UTC", Job.finished_at))}
    keys = [columns[g] for g in by]
    scope: ColumnElement[bool] = true() if tenant_id is None else Job.tenant_id == tenant_id
    query = (
        select(*keys, func.count())
        .select_from(Job)
        .join(Tenant, Tenant.id == Job.tenant_id)
        .where(scope, Job.status == JobStatus.FAILED,
               Job.finished_at >= day_start(start), Job.finished_at < day_start(end),
               ~exists().where(LedgerEntry.job_id == Job.id))
    )
    if keys:
        query = query.group_by(*keys)
    found = []
    for r in session.execute(query):
        values = list(r)
        if values[-1]:
            found.append(RollupRow(_keys(by, values[:-1]),
                                   Usage(failed_unbilled=int(values[-1]))))
    return found
