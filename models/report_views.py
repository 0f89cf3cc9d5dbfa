"""Each report as one call on a session: the queries of `models.report_queries` and
`models.audit_queries` put through the pure core of `ledger`. The API and `penny report`
both read reports through these."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy.orm import Session

from ledger.cost_report import Change, Driver, ReportLine, Usage, compare, group, top_drivers, total
from ledger.max_tokens_audit import AuditLine, audit_line, recommendation
from ledger.retry_storms import ClientRetries, KeyStorm, RequestStorm, is_key_storm, request_storm
from models.audit_queries import (
    client_retries,
    excess_over,
    feature_outputs,
    repeated_requests,
    replayed_keys,
)
from models.max_tokens_caps import caps_of
from models.report_queries import day_start, rollup_rows


@dataclass(frozen=True)
class Window:
    """Whole UTC days: `start` included, `end` excluded."""

    start: date
    end: date


def cost_report(session: Session, window: Window, grouping: str, *,
                tenant_id: uuid.UUID | None, feature_tag: str) -> tuple[Usage, list[ReportLine]]:
    rows = rollup_rows(session, window.start, window.end, by=(grouping,),
                       tenant_id=tenant_id, feature_tag=feature_tag)
    return total(rows), group(rows, grouping)


def drivers_report(session: Session, window: Window, limit: int, *,
                   tenant_id: uuid.UUID | None, feature_tag: str) -> tuple[Usage, list[Driver]]:
    rows = rollup_rows(session, window.start, window.end, by=("tenant", "model", "feature"),
                       tenant_id=tenant_id, feature_tag=feature_tag)
    return total(rows), top_drivers(rows, limit)


def window_totals(session: Session, window: Window, *, tenant_id: uuid.UUID | None,
                  feature_tag: str) -> Usage:
    return total(rollup_rows(session, window.start, window.end, tenant_id=tenant_id,
                             feature_tag=feature_tag))


def compare_report(session: Session, baseline: Window, current: Window, *,
                   tenant_id: uuid.UUID | None, feature_tag: str
                   ) -> tuple[Usage, Usage, list[Change]]:
    before = window_totals(session, baseline, tenant_id=tenant_id, feature_tag=feature_tag)
    after = window_totals(session, current, tenant_id=tenant_id, feature_tag=feature_tag)
    return before, after, compare(before, after)


def max_tokens_audit(session: Session, window: Window, margin: float, *,
                     tenant_id: uuid.UUID | None, feature_tag: str) -> list[AuditLine]:
    since, until = day_start(window.start), day_start(window.end)
    outputs = feature_outputs(session, since, until, tenant_id=tenant_id,
                              feature_tag=feature_tag)
    recommended = {(o.tenant, o.feature): recommendation(o, margin) for o in outputs}
    wanted = {k: v for k, v in recommended.items() if v is not None}
    excess = excess_over(session, since, until, tenant_id=tenant_id,
                         feature_tag=feature_tag, caps=wanted)
    current = caps_of(session, tenant_id) if tenant_id is not None else {}
    return [audit_line(o, recommended[(o.tenant, o.feature)],
                       *excess.get((o.tenant, o.feature), (0, 0)),
                       current_cap=current.get(o.feature))
            for o in outputs]


@dataclass(frozen=True)
class RetryStorms:
    requests: list[RequestStorm]
    idempotency_keys: list[KeyStorm]
    client_retries: list[ClientRetries]


def retry_storms(session: Session, window: Window, min_sends: int, span: timedelta, *,
                 tenant_id: uuid.UUID | None, feature_tag: str) -> RetryStorms:
    since, until = day_start(window.start), day_start(window.end)
    repeats = repeated_requests(session, since, until, tenant_id=tenant_id,
                                feature_tag=feature_tag, min_sends=min_sends)
    keys = replayed_keys(session, since, until, tenant_id=tenant_id, min_sends=min_sends)
    retried = client_retries(session, since, until, tenant_id=tenant_id,
                             feature_tag=feature_tag)
    storms = [s for s in (request_storm(t, f, m, k, sends, min_sends, span)
                          for t, f, m, k, sends in repeats) if s is not None]
    storms.sort(key=lambda s: (-s.repeats_naive_cost_usd, -s.sends, s.key))
    key_storms = [KeyStorm(t, str(sid), replays, first, last, naive)
                  for t, sid, replays, first, last, naive in keys
                  if is_key_storm(replays, first, last, min_sends, span)]
    return RetryStorms(storms, key_storms, retried)
