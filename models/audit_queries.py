"""The queries behind the two audits: engine-run output lengths per feature (max_tokens
audit) and repeated requests, replayed Idempotency-Keys and SDK retries (retry storms).
They read ledger rows of a window through the ledger's (tenant, created_at) index."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Integer, String, cast, func, literal, select, true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from ledger.max_tokens_audit import FeatureOutputs
from ledger.pricing import SERVED_BY_ENGINE
from ledger.retry_storms import ClientRetries, Send
from models.tables import Job, LedgerEntry, Result, Submission, Tenant


def _feature(feature_tag: str) -> ColumnElement[Any]:
    return cast(func.left(func.coalesce(Job.tags.op("->>")(feature_tag), ""), 200), String)


def _requested() -> ColumnElement[Any]:
    sampling = Job.request.op("->")("sampling")
    return cast(func.coalesce(sampling.op("->>")("requested_max_tokens"),
                              sampling.op("->>")("max_tokens")), Integer)


def _window(start: datetime, end: datetime, tenant_id: uuid.UUID | None
            ) -> ColumnElement[bool]:
    scope: ColumnElement[bool] = true() if tenant_id is None else (
        LedgerEntry.tenant_id == tenant_id)
    return scope & (LedgerEntry.created_at >= start) & (LedgerEntry.created_at < end)


def feature_outputs(session: Session, start: datetime, end: datetime, *,
                    tenant_id: uuid.UUID | None, feature_tag: str) -> list[FeatureOutputs]:
    """Per tenant and feature, the output lengths of jobs the engine ran (cascade attempts
    included: they were paid for)."""
    feature = _feature(feature_tag)
    requested = _requested()
    out = LedgerEntry.output_tokens

    def pct(fraction: float, column: Any) -> Any:
        return func.percentile_disc(fraction).within_group(column)

    query = (
        select(Tenant.name, feature, func.count(),
               func.count().filter(Result.finish_reason == "length"),
               func.count().filter(Job.request.op("->")("sampling").op("?")(
                   literal("requested_max_tokens"))),
               pct(0.5, out), pct(0.95, out), pct(0.99, out), func.max(out),
               pct(0.5, requested), func.max(requested), func.sum(out),
               func.sum(LedgerEntry.cost_usd))
        .select_from(LedgerEntry)
        .join(Job, Job.id == LedgerEntry.job_id)
        .join(Tenant, Tenant.id == LedgerEntry.tenant_id)
        .outerjoin(Result, Result.job_id == LedgerEntry.job_id)
        .where(_window(start, end, tenant_id), LedgerEntry.served_by == SERVED_BY_ENGINE,
               requested.is_not(None))
        .group_by(Tenant.name, feature)
        .order_by(func.sum(LedgerEntry.cost_usd).desc(), Tenant.name, feature)
    )
    return [FeatureOutputs(tenant=r[0], feature=r[1], jobs=r[2], length_jobs=r[3],
                           capped_jobs=r[4], p50_output=int(r[5]), p95_output=int(r[6]),
                           p99_output=int(r[7]), max_output=int(r[8]),
                           p50_requested=int(r[9]), max_requested=int(r[10]),
                           output_tokens=int(r[11]), cost_usd=Decimal(r[12]))
            for r in session.execute(query)]


def excess_over(session: Session, start: datetime, end: datetime, *,
                tenant_id: uuid.UUID | None, feature_tag: str,
                caps: Mapping[tuple[str, str], int]) -> dict[tuple[str, str], tuple[int, int]]:
    """Per (tenant, feature) in `caps`: the engine-run jobs that made more output tokens
    than the cap, and how many tokens beyond it they made."""
    if not caps:
        return {}
    keys = list(caps)
    wanted = select(
        func.unnest(literal([t for t, _ in keys], ARRAY(String))).label("tenant"),
        func.unnest(literal([f for _, f in keys], ARRAY(String))).label("feature"),
        func.unnest(literal([caps[k] for k in keys], ARRAY(Integer))).label("cap"),
    ).subquery()
    feature = _feature(feature_tag)
    over = LedgerEntry.output_tokens - wanted.c.cap
    query = (
        select(wanted.c.tenant, wanted.c.feature, func.count(), func.sum(over))
        .select_from(LedgerEntry)
        .join(Job, Job.id == LedgerEntry.job_id)
        .join(Tenant, Tenant.id == LedgerEntry.tenant_id)
        .join(wanted, (wanted.c.tenant == Tenant.name) & (wanted.c.feature == feature))
        .where(_window(start, end, tenant_id), LedgerEntry.served_by == SERVED_BY_ENGINE,
               LedgerEntry.output_tokens > wanted.c.cap)
        .group_by(wanted.c.tenant, wanted.c.feature)
    )
    return {(t, f): (int(n), int(tokens)) for t, f, n, tokens in session.execute(query)}


def repeated_requests(session: Session, start: datetime, end: datetime, *,
                      tenant_id: uuid.UUID | None, feature_tag: str, min_sends: int
                      ) -> list[tuple[str, str, str, str, list[Send]]]:
    """(tenant, feature, model, key, its billed sends) of every request sent at least
    `min_sends` times in the window (cascade attempts left out)."""
    feature = _feature(feature_tag)
    where = (_window(start, end, tenant_id) & Job.single_flight_key.is_not(None)
             & Job.cascade_of.is_(None))
    # First the keys sent often enough (a count per key), then the sends of those alone:
    # gathering every key's sends first cost seconds per million ledger rows.
    hot = (
        select(LedgerEntry.tenant_id.label("tenant_id"), Job.single_flight_key.label("key"))
        .select_from(LedgerEntry).join(Job, Job.id == LedgerEntry.job_id)
        .where(where)
        .group_by(LedgerEntry.tenant_id, Job.single_flight_key)
        .having(func.count() >= min_sends)
    ).subquery()
    # The aggregates of one group read its rows in the same order, so the arrays line up.
    query = (
        select(Tenant.name, feature, Job.model, Job.single_flight_key,
               func.array_agg(LedgerEntry.created_at), func.array_agg(LedgerEntry.cost_usd),
               func.array_agg(LedgerEntry.naive_cost_usd),
               func.array_agg(LedgerEntry.served_by), func.array_agg(Job.client_retry_count))
        .select_from(LedgerEntry)
        .join(Job, Job.id == LedgerEntry.job_id)
        .join(hot, (hot.c.tenant_id == LedgerEntry.tenant_id)
              & (hot.c.key == Job.single_flight_key))
        .join(Tenant, Tenant.id == LedgerEntry.tenant_id)
        .where(where)
        .group_by(Tenant.name, feature, Job.model, Job.single_flight_key)
        .having(func.count() >= min_sends)
    )
    found = []
    for name, tag, model, key, times, costs, naive, served, retries in session.execute(query):
        sends = [Send(at, Decimal(c), Decimal(n), s, r)
                 for at, c, n, s, r in zip(times, costs, naive, served, retries, strict=True)]
        found.append((name, tag, model, key, sends))
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


def client_retries(session: Session, start: datetime, end: datetime, *,
                   tenant_id: uuid.UUID | None, feature_tag: str) -> list[ClientRetries]:
    """Per tenant and feature, billed jobs whose request carried an SDK retry count."""
    feature = _feature(feature_tag)
    query = (
        select(Tenant.name, feature, func.count(), func.max(Job.client_retry_count),
               func.sum(LedgerEntry.cost_usd), func.sum(LedgerEntry.naive_cost_usd))
        .select_from(LedgerEntry)
        .join(Job, Job.id == LedgerEntry.job_id)
        .join(Tenant, Tenant.id == LedgerEntry.tenant_id)
        .where(_window(start, end, tenant_id), Job.client_retry_count > 0)
        .group_by(Tenant.name, feature)
        .order_by(func.count().desc(), Tenant.name, feature)
    )
    return [ClientRetries(t, f, int(n), int(m), Decimal(c), Decimal(nv))
            for t, f, n, m, c, nv in session.execute(query)]
