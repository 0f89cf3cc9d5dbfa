"""The queries behind the two audits: output-token histograms per feature (max_tokens
audit) and repeated requests, replayed Idempotency-Keys and SDK retries (retry storms).
They read the rollups the ledger's triggers keep (`models.audit_tables`); repeated
requests read only the ledger rows of requests sent often enough."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, String, cast, func, select, text, true, union_all
from sqlalchemy.orm import Session

from ledger.output_histogram import HistogramRow
from ledger.retry_storms import ClientRetries, Send
from models.audit_tables import ClientRetriesDaily, LedgerOutputDaily, RequestRepeat, RequestSends
from models.tables import Job, LedgerEntry, Submission, Tenant


def _feature(feature_tag: str) -> ColumnElement[Any]:
    return cast(func.left(func.coalesce(Job.tags.op("->>")(feature_tag), ""), 200), String)


def _window(start: datetime, end: datetime, tenant_id: uuid.UUID | None
            ) -> ColumnElement[bool]:
    scope: ColumnElement[bool] = true() if tenant_id is None else (
        LedgerEntry.tenant_id == tenant_id)
    return scope & (LedgerEntry.created_at >= start) & (LedgerEntry.created_at < end)


def histogram_rows(session: Session, start: date, end: date, *,
                   tenant_id: uuid.UUID | None) -> list[HistogramRow]:
    """The output-token rollup of days `start` <= day < `end`, summed over days and models:
    one row per tenant, feature, output bucket and requested bucket."""
    d = LedgerOutputDaily
    scope: ColumnElement[bool] = true() if tenant_id is None else d.tenant_id == tenant_id
    query = (
        select(Tenant.name, d.feature, d.output_bucket, d.requested_bucket, func.sum(d.jobs),
               func.sum(d.length_jobs), func.sum(d.capped_jobs), func.sum(d.output_tokens),
               func.max(d.max_output), func.min(d.min_requested), func.max(d.max_requested),
               func.sum(d.cost_usd))
        .select_from(d)
        .join(Tenant, Tenant.id == d.tenant_id)
        .where(scope, d.day >= start, d.day < end)
        .group_by(Tenant.name, d.feature, d.output_bucket, d.requested_bucket)
    )
    return [HistogramRow(tenant=r[0], feature=r[1], output_edge=r[2], requested_edge=r[3],
                         jobs=int(r[4]), length_jobs=int(r[5]), capped_jobs=int(r[6]),
                         output_tokens=int(r[7]), max_output=int(r[8]),
                         min_requested=int(r[9]), max_requested=int(r[10]),
                         cost_usd=Decimal(r[11]))
            for r in session.execute(query)]


def repeated_requests(session: Session, start: datetime, end: datetime, *,
                      tenant_id: uuid.UUID | None, feature_tag: str, min_sends: int
                      ) -> list[tuple[str, str, str, str, list[Send]]]:
    """(tenant, feature, model, key, its billed sends) of every request sent at least
    `min_sends` times in the window (cascade attempts left out)."""
    sent = RequestSends
    scope: ColumnElement[bool] = true() if tenant_id is None else sent.tenant_id == tenant_id
    # The requests billed often enough overall whose sends reach into the window: the
    # partial index holds only requests sent more than once.
    hot = (
        select(sent.tenant_id, sent.key, sent.first_job_id)
        .where(scope, text("request_sends.sends >= 2"), sent.sends >= min_sends,
               sent.last_at >= start, sent.first_at < end)
    ).cte("hot")
    sends = union_all(
        select(hot.c.tenant_id, hot.c.key, hot.c.first_job_id.label("job_id")),
        select(hot.c.tenant_id, hot.c.key, RequestRepeat.job_id)
        .select_from(hot)
        .join(RequestRepeat, (RequestRepeat.tenant_id == hot.c.tenant_id)
              & (RequestRepeat.key == hot.c.key)),
    ).subquery("sends")
    feature = _feature(feature_tag)
    # The aggregates of one group read its rows in the same order, so the arrays line up.
    query = (
        select(Tenant.name, feature, Job.model, sends.c.key,
               func.array_agg(LedgerEntry.created_at), func.array_agg(LedgerEntry.cost_usd),
               func.array_agg(LedgerEntry.naive_cost_usd),
               func.array_agg(LedgerEntry.served_by), func.array_agg(Job.client_retry_count))
        .select_from(sends)
        .join(LedgerEntry, LedgerEntry.job_id == sends.c.job_id)
        .join(Job, Job.id == sends.c.job_id)
        .join(Tenant, Tenant.id == sends.c.tenant_id)
        .where(_window(start, end, tenant_id))
        .group_by(Tenant.name, feature, Job.model, sends.c.key)
        .having(func.count() >= min_sends)
    )
    found = []
    for name, tag, model, key, times, costs, naive, served, retries in session.execute(query):
        sends_of = [Send(at, Decimal(c), Decimal(n), s, r)
                    for at, c, n, s, r in zip(times, costs, naive, served, retries,
                                              strict=True)]
        found.append((name, tag, model, key, sends_of))
    return found


def replayed_keys(session: Session, start: datetime, end: datetime, *,
                  tenant_id: uuid.UUID | None, min_sends: int
                  ) -> list[tuple[str, uuid.UUID, int, datetime, datetime, Decimal]]:
    """(tenant, submission, replays, created, last replayed, its naive cost) of every
    submission whose Idempotency-Key came back at least `min_sends - 1` times, the last
    of them in the window."""
    scope: ColumnElement[bool] = true() if tenant_id is None else (
        Submission.tenant_id == tenant_id)
    naive = (select(func.coalesce(func.sum(LedgerEntry.naive_cost_usd), 0))
             .where(LedgerEntry.submission_id == Submission.id).scalar_subquery())
    query = (
        select(Tenant.name, Submission.id, Submission.idempotent_replays,
               Submission.created_at, Submission.last_replayed_at, naive)
        .join(Tenant, Tenant.id == Submission.tenant_id)
        .where(scope, Submission.idempotent_replays >= max(1, min_sends - 1),
               Submission.last_replayed_at >= start, Submission.last_replayed_at < end)
        .order_by(Submission.idempotent_replays.desc())
    )
    return [(r[0], r[1], int(r[2]), r[3], r[4] or r[3], Decimal(r[5]))
            for r in session.execute(query)]


def client_retries(session: Session, start: date, end: date, *,
                   tenant_id: uuid.UUID | None) -> list[ClientRetries]:
    """Per tenant and feature, billed jobs whose request carried an SDK retry count, from
    the daily rollup of days `start` <= day < `end`."""
    d = ClientRetriesDaily
    scope: ColumnElement[bool] = true() if tenant_id is None else d.tenant_id == tenant_id
    jobs = func.sum(d.retried_jobs)
    query = (
        select(Tenant.name, d.feature, jobs, func.max(d.max_client_retry_count),
               func.sum(d.cost_usd), func.sum(d.naive_cost_usd))
        .select_from(d)
        .join(Tenant, Tenant.id == d.tenant_id)
        .where(scope, d.day >= start, d.day < end)
        .group_by(Tenant.name, d.feature)
        .order_by(jobs.desc(), Tenant.name, d.feature)
    )
    return [ClientRetries(t, f, int(n), int(m), Decimal(c), Decimal(nv))
            for t, f, n, m, c, nv in session.execute(query)]
