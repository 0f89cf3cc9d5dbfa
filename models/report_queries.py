"""The queries behind cost reports: the ledger's daily rollup over a window, and the failed
jobs the ledger has no row for (a report's failure rate counts them)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal

from sqlalchemy import ColumnElement, String, cast, exists, func, select, true
from sqlalchemy.orm import Session

from ledger.cost_report import FAILED, RollupRow, Usage, money_columns, rollup_usage
from models.status import JobStatus
from models.tables import Job, LedgerDaily, LedgerEntry, Tenant


def day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def rollup_rows(session: Session, start: date, end: date, *,
                tenant_id: uuid.UUID | None = None, feature_tag: str = "feature"
                ) -> list[RollupRow]:
    """The rollup rows of days `start` <= day < `end` (of one tenant if given)."""
    scope: ColumnElement[bool] = true() if tenant_id is None else (
        LedgerDaily.tenant_id == tenant_id)
    money = money_columns()
    query = (
        select(LedgerDaily.day, Tenant.name, LedgerDaily.model, LedgerDaily.feature,
               LedgerDaily.served_by, LedgerDaily.outcome, LedgerDaily.jobs,
               LedgerDaily.requests, LedgerDaily.length_jobs, LedgerDaily.capped_jobs,
               LedgerDaily.input_tokens, LedgerDaily.cached_tokens,
               LedgerDaily.output_tokens, LedgerDaily.engine_seconds,
               *(getattr(LedgerDaily, c) for c in money))
        .join(Tenant, Tenant.id == LedgerDaily.tenant_id)
        .where(scope, LedgerDaily.day >= start, LedgerDaily.day < end)
    )
    rows = []
    for r in session.execute(query):
        usage = rollup_usage(
            jobs=r.jobs, requests=r.requests, length_jobs=r.length_jobs,
            capped_jobs=r.capped_jobs, input_tokens=r.input_tokens,
            cached_tokens=r.cached_tokens, output_tokens=r.output_tokens,
            engine_seconds=r.engine_seconds, served_by=r.served_by, outcome=r.outcome,
            money={c: Decimal(getattr(r, c)) for c in money})
        rows.append(RollupRow(r.day, r.name, r.model, r.feature, r.served_by, r.outcome,
                              usage))
    return rows + unbilled_failures(session, start, end, tenant_id=tenant_id,
                                    feature_tag=feature_tag)


def unbilled_failures(session: Session, start: date, end: date, *,
                      tenant_id: uuid.UUID | None = None, feature_tag: str = "feature"
                      ) -> list[RollupRow]:
    """Failed jobs finished in the window that have no ledger row, as rollup-shaped rows
    (no money) so they group like the rest."""
    day = func.date(func.timezone("UTC", Job.finished_at))
    feature = func.coalesce(Job.tags.op("->>")(feature_tag), "")
    scope: ColumnElement[bool] = true() if tenant_id is None else Job.tenant_id == tenant_id
    query = (
        select(day, Tenant.name, Job.model, cast(feature, String), func.count())
        .join(Tenant, Tenant.id == Job.tenant_id)
        .where(scope, Job.status == JobStatus.FAILED,
               Job.finished_at >= day_start(start), Job.finished_at < day_start(end),
               ~exists().where(LedgerEntry.job_id == Job.id))
        .group_by(day, Tenant.name, Job.model, feature)
    )
    return [RollupRow(d, name, model, tag[:200], "", FAILED, Usage(failed_unbilled=count))
            for d, name, model, tag, count in session.execute(query)]
