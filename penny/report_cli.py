"""`penny report`: the ledger's reports and audits as rich tables, straight against the
database (an operator's view: every tenant, or one with --tenant), and the per-feature
max_tokens caps."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from ledger.cost_report import Usage
from models.max_tokens_caps import delete_cap, list_caps, set_cap
from models.report_views import (
    Window,
    compare_report,
    cost_report,
    drivers_report,
    max_tokens_audit,
    retry_storms,
)
from models.tenants import find_tenant
from penny.runtime import open_runtime
from penny.settings import Settings

T = TypeVar("T")
DEFAULT_DAYS = 30


def window(start: date | None, end: date | None) -> Window:
    end = end or datetime.now(UTC).date() + timedelta(days=1)
    if start is None:
        if end - date.min < timedelta(days=DEFAULT_DAYS):
            raise typer.BadParameter("too early to count days back from", param_hint="--end")
        start = end - timedelta(days=DEFAULT_DAYS)
    if start >= end:
        raise typer.BadParameter("the start must be before the end", param_hint="--start")
    return Window(start, end)


def _with_session(settings: Settings, tenant: str | None,
                  read: Callable[[Session, uuid.UUID | None], T]) -> T:
    runtime = open_runtime(settings)
    try:
        with runtime.sessions() as session:
            tenant_id = None
            if tenant is not None:
                found = find_tenant(session, tenant)
                if found is None:
                    raise typer.BadParameter(f"no tenant named {tenant!r}",
                                             param_hint="--tenant")
                tenant_id = found.id
            result = read(session, tenant_id)
            session.commit()
            return result
    finally:
        runtime.close()


def _money(value: Decimal | None) -> str:
    return "-" if value is None else f"${value:.6f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _tokens_per_dollar(usage: Usage) -> str:
    value = usage.tokens_per_dollar
    return "-" if value is None else f"{value:,.0f}"


def costs_command(settings: Settings, grouping: str, span: Window, tenant: str | None
                  ) -> None:
    totals, lines = _with_session(settings, tenant, lambda s, t: cost_report(
        s, span, grouping, tenant_id=t, feature_tag=settings.report_feature_tag))
    title = (f"cost by {grouping}, {span.start} to {span.end} (end excluded), "
             f"{tenant or 'all tenants'}")
    table = Table(title=title)
    for column in (grouping, "requests", "cost", "naive cost", "saved", "cost/request",
                   "tokens/$", "length rate", "failure rate"):
        table.add_column(column, justify="left" if column == grouping else "right")
    for key, usage in [*((line.key or "(untagged)", line.usage) for line in lines),
                       ("total", totals)]:
        table.add_row(key, f"{usage.all_requests:,}", _money(usage.cost_usd),
                      _money(usage.savings.naive_cost_usd), _money(usage.savings.saved_usd),
                      _money(usage.cost_per_request_usd), _tokens_per_dollar(usage),
                      _share(usage.length_rate), _share(usage.failure_rate),
                      end_section=key == (lines[-1].key or "(untagged)") if lines else False)
    console = Console()
    console.print(table)
    savings = Table(title="savings by mechanism (total)")
    savings.add_column("what")
    savings.add_column("amount", justify="right")
    for label, value in totals.savings.summary_rows():
        savings.add_row(label, value)
    console.print(savings)


def drivers_command(settings: Settings, span: Window, limit: int, tenant: str | None
                    ) -> None:
    totals, found = _with_session(settings, tenant, lambda s, t: drivers_report(
        s, span, limit, tenant_id=t, feature_tag=settings.report_feature_tag))
    table = Table(title=f"top cost drivers, {span.start} to {span.end} "
                        f"(of {_money(totals.cost_usd)})")
    for column in ("tenant", "model", "feature", "requests", "cost", "share", "cost/request"):
        table.add_column(column, justify="right" if column in (
            "requests", "cost", "share", "cost/request") else "left")
    for d in found:
        table.add_row(d.tenant, d.model, d.feature or "(untagged)",
                      f"{d.usage.all_requests:,}", _money(d.usage.cost_usd), _share(d.share),
                      _money(d.usage.cost_per_request_usd))
    Console().print(table)


def compare_command(settings: Settings, baseline: Window, current: Window,
                    tenant: str | None) -> None:
    _, _, changes = _with_session(settings, tenant, lambda s, t: compare_report(
        s, baseline, current, tenant_id=t, feature_tag=settings.report_feature_tag))
    table = Table(title=f"baseline {baseline.start}..{baseline.end} vs current "
                        f"{current.start}..{current.end}")
    for column in ("measure", "baseline", "current", "change"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    for c in changes:
        table.add_row(c.name, _number(c.baseline), _number(c.current),
                      "-" if c.change is None else f"{c.change:+.1%}")
    Console().print(table)


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.6g}"


def max_tokens_command(settings: Settings, span: Window, margin: float, tenant: str | None
                       ) -> None:
    lines = _with_session(settings, tenant, lambda s, t: max_tokens_audit(
        s, span, margin, tenant_id=t, feature_tag=settings.report_feature_tag))
    table = Table(title=f"max_tokens audit, {span.start} to {span.end} "
                        f"(recommended: p99 x {margin}, rounded up to 16)")
    for column in ("tenant", "feature", "jobs", "length rate", "out p50/p95/p99",
                   "asked p50/max", "recommended", "cap now", "would save (at most)"):
        table.add_column(column, justify="left" if column in ("tenant", "feature")
                         else "right")
    for line in lines:
        o = line.outputs
        table.add_row(o.tenant, o.feature or "(untagged)", f"{o.jobs:,}",
                      _share(line.length_rate),
                      f"{o.p50_output}/{o.p95_output}/{o.p99_output}",
                      f"{o.p50_requested}/{o.max_requested}",
                      str(line.recommended_max_tokens or "-"),
                      str(line.current_cap or "-"), _money(line.saving_usd))
    Console().print(table)


def retry_storms_command(settings: Settings, span: Window, min_sends: int,
                         window_seconds: float, tenant: str | None) -> None:
    found = _with_session(settings, tenant, lambda s, t: retry_storms(
        s, span, min_sends, timedelta(seconds=window_seconds), tenant_id=t,
        feature_tag=settings.report_feature_tag))
    console = Console()
    table = Table(title=f"the same request sent >= {min_sends} times within "
                        f"{window_seconds:g} s")
    for column in ("tenant", "feature", "model", "request", "sends", "repeats cost",
                   "naive cost of repeats", "max SDK retry"):
        table.add_column(column)
    for s in found.requests:
        table.add_row(s.tenant, s.feature or "(untagged)", s.model, s.key[:12], str(s.sends),
                      _money(s.repeats_cost_usd), _money(s.repeats_naive_cost_usd),
                      str(s.max_client_retry_count if s.max_client_retry_count is not None
                          else "-"))
    console.print(table)
    keys = Table(title="Idempotency-Keys sent again (answered from the stored submission)")
    for column in ("tenant", "submission", "sends", "naive cost of repeats"):
        keys.add_column(column)
    for k in found.idempotency_keys:
        keys.add_row(k.tenant, k.submission_id, str(k.replays + 1),
                     _money(k.repeats_naive_cost_usd))
    console.print(keys)
    retried = Table(title="jobs whose SDK said it was retrying (x-stainless-retry-count)")
    for column in ("tenant", "feature", "jobs", "max retry", "cost"):
        retried.add_column(column)
    for r in found.client_retries:
        retried.add_row(r.tenant, r.feature or "(untagged)", str(r.retried_jobs),
                        str(r.max_client_retry_count), _money(r.cost_usd))
    console.print(retried)


def caps_list_command(settings: Settings, tenant: str) -> None:
    caps = _with_session(settings, tenant, lambda s, t: list_caps(s, _named(t)))
    table = Table(title=f"max_tokens caps of {tenant}")
    table.add_column("feature")
    table.add_column("max_tokens", justify="right")
    table.add_column("since (UTC)")
    for cap in caps:
        table.add_row(cap.feature, str(cap.max_tokens), f"{cap.updated_at:%Y-%m-%d %H:%M}")
    Console().print(table)


def _named(tenant_id: uuid.UUID | None) -> uuid.UUID:
    assert tenant_id is not None, "caps commands always name a tenant"
    return tenant_id


def caps_set_command(settings: Settings, tenant: str, feature: str, max_tokens: int | None,
                     margin: float) -> None:
    def store(session: Session, tenant_id: uuid.UUID | None) -> int:
        cap = max_tokens
        if cap is None:
            lines = max_tokens_audit(session, window(None, None), margin,
                                     tenant_id=_named(tenant_id),
                                     feature_tag=settings.report_feature_tag)
            found = [line.recommended_max_tokens for line in lines
                     if line.outputs.feature == feature]
            if not found or found[0] is None:
                raise typer.BadParameter(
                    f"the audit recommends no cap for {feature!r} over the last 30 days; "
                    "give --max-tokens", param_hint="--recommended")
            cap = found[0]
        set_cap(session, _named(tenant_id), feature, cap)
        return cap

    cap = _with_session(settings, tenant, store)
    typer.echo(f"{tenant}: jobs of feature {feature!r} now run with max_tokens <= {cap} "
               f"(within PENNY_REPORT_CAPS_CACHE_SECONDS on every server)")


def caps_remove_command(settings: Settings, tenant: str, feature: str) -> None:
    removed = _with_session(settings, tenant,
                            lambda s, t: delete_cap(s, _named(t), feature))
    if not removed:
        raise typer.BadParameter(f"{tenant} has no cap for {feature!r}")
    typer.echo(f"{tenant}: the cap on feature {feature!r} is removed")


