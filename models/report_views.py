"""Each report as one call on a session: the queries of `models.report_queries` and
`models.audit_queries` put through the pure core of `ledger`. The API and `penny report`
both read reports through these."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy.orm import Session

from ledger.cost_report import Change, Driver, ReportLine, Usage, compare, group, top_drivers, total
from ledger.max_tokens_audit import AuditLine, audit_line
from ledger.output_histogram import histograms, recommend_from_histogram
from ledger.retry_storms import ClientRetries, KeyStorm, RequestStorm, is_key_storm, request_storm
from models.audit_queries import (
    client_retries,
    histogram_rows,
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
    """From the output-token rollup: percentiles never below the true ones (see
    `ledger.output_histogram`), exact totals, and a recommendation whose cut jobs and
    excess tokens are exact. `feature_tag` is fixed when rows are rolled up."""
    found = histograms(histogram_rows(session, window.start, window.end,
                                      tenant_id=tenant_id))
    current = caps_of(session, tenant_id) if tenant_id is not None else {}
    lines = []
    for histogram in found:
        recommended = recommend_from_histogram(histogram, margin)
        beyond = histogram.beyond(recommended) if recommended is not None else (0, 0)
        lines.append(audit_line(histogram.feature_outputs(), recommended, *beyond,
                                current_cap=current.get(histogram.feature)))
    return lines


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
    retried = client_retries(session, window.start, window.end, tenant_id=tenant_id)
    storms = [s for s in (request_storm(t, f, m, k, sends, min_sends, span)
                          for t, f, m, k, sends in repeats) if s is not None]
    storms.sort(key=lambda s: (-s.repeats_naive_cost_usd, -s.sends, s.key))
    key_storms = [KeyStorm(t, str(sid), replays, first, last, naive)
                  for t, sid, replays, first, last, naive in keys
                  if is_key_storm(replays, first, last, min_sends, span)]
    return RetryStorms(storms, key_storms, retried)
