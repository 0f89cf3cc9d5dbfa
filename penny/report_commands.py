"""The `penny report` commands; what they print is in `penny.report_cli`."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

import typer

from penny.settings import Settings

report_app = typer.Typer(no_args_is_help=True, help="Cost reports and audits of the ledger.")
caps_app = typer.Typer(no_args_is_help=True,
                       help="Per-feature max_tokens caps (opt-in, applied at intake).")
report_app.add_typer(caps_app, name="caps")

Tenant = Annotated[str | None, typer.Option(help="one tenant's (default: every tenant's)")]
NamedTenant = Annotated[str, typer.Option(help="the tenant whose caps these are")]
Start = Annotated[datetime | None, typer.Option(
    formats=["%Y-%m-%d"], help="first day (UTC), default: 30 days before --end")]
End = Annotated[datetime | None, typer.Option(
    formats=["%Y-%m-%d"], help="day after the last (UTC), default: tomorrow")]
Margin = Annotated[float, typer.Option(min=1.0, max=10.0,
                                       help="recommended max_tokens = p99 x margin")]


def _day(value: datetime | None) -> date | None:
    return value.date() if value is not None else None


@report_app.command("costs")
def costs(
    by: Annotated[str, typer.Option(help="tenant, model, feature or day")] = "feature",
    start: Start = None, end: End = None, tenant: Tenant = None,
) -> None:
    """Cost, naive counterfactual, savings, cost per request and tokens per dollar, per
    group, and the savings by mechanism."""
    from ledger.cost_report import GROUPINGS
    from penny.report_cli import costs_command, window

    if by not in GROUPINGS:
        raise typer.BadParameter(f"one of {', '.join(GROUPINGS)}", param_hint="--by")
    costs_command(Settings(), by, window(_day(start), _day(end)), tenant)


@report_app.command("drivers")
def drivers(start: Start = None, end: End = None, tenant: Tenant = None,
            limit: Annotated[int, typer.Option(min=1, max=100)] = 10) -> None:
    """The costliest (tenant, model, feature) combinations."""
    from penny.report_cli import drivers_command, window

    drivers_command(Settings(), window(_day(start), _day(end)), limit, tenant)


@report_app.command("compare")
def compare(
    baseline_start: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"])],
    baseline_end: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"])],
    current_start: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"])],
    current_end: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"])],
    tenant: Tenant = None,
) -> None:
    """Baseline vs current window: cost per request, tokens per dollar, volume, savings,
    failure and length rates, cache hit rates."""
    from penny.report_cli import compare_command, window

    compare_command(Settings(), window(baseline_start.date(), baseline_end.date()),
                    window(current_start.date(), current_end.date()), tenant)


@report_app.command("max-tokens")
def max_tokens(start: Start = None, end: End = None, tenant: Tenant = None,
               margin: Margin = 1.25) -> None:
    """The max_tokens audit per feature, with the recommended cap and what it would save."""
    from penny.report_cli import max_tokens_command, window

    max_tokens_command(Settings(), window(_day(start), _day(end)), margin, tenant)


@report_app.command("retry-storms")
def retry_storms(
    start: Start = None, end: End = None, tenant: Tenant = None,
    min_sends: Annotated[int, typer.Option(min=2)] = 3,
    window_seconds: Annotated[float, typer.Option(min=1.0)] = 3600.0,
) -> None:
    """Requests and Idempotency-Keys sent again and again, and SDK retries."""
    from penny.report_cli import retry_storms_command, window

    retry_storms_command(Settings(), window(_day(start), _day(end)), min_sends,
                         window_seconds, tenant)


@caps_app.command("list")
def caps_list(tenant: NamedTenant) -> None:
    """The tenant's caps."""
    from penny.report_cli import caps_list_command

    caps_list_command(Settings(), tenant)


@caps_app.command("set")
def caps_set(
    feature: Annotated[str, typer.Argument(help="the feature tag's value")],
    tenant: NamedTenant,
    max_tokens_cap: Annotated[int | None, typer.Option("--max-tokens", min=1)] = None,
    recommended: Annotated[bool, typer.Option(
        "--recommended", help="the audit's recommendation over the last 30 days")] = False,
    margin: Margin = 1.25,
) -> None:
    """Cap max_tokens for one feature's new jobs (what a job asked for is kept)."""
    from penny.report_cli import caps_set_command

    if recommended == (max_tokens_cap is not None):
        raise typer.BadParameter("give --max-tokens N or --recommended")
    caps_set_command(Settings(), tenant, feature, max_tokens_cap, margin)


@caps_app.command("remove")
def caps_remove(feature: Annotated[str, typer.Argument()], tenant: NamedTenant) -> None:
    """Remove a feature's cap."""
    from penny.report_cli import caps_remove_command

    caps_remove_command(Settings(), tenant, feature)
