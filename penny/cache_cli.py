"""`penny cache`: the exact result cache from an operator's shell, straight against the
database (no API needed)."""

from __future__ import annotations

import uuid

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from models.cache_admin import (
    cache_stats,
    list_entries,
    purge_entries,
    tenant_named,
    tenant_names,
)
from penny.database import stop_embedded_postgres
from penny.runtime import open_runtime
from penny.settings import Settings


def _tenant_id(session: Session, name: str | None) -> uuid.UUID | None:
    """None for every tenant; a tenant penny has never seen is an error, not an empty list."""
    if name is None:
        return None
    tenant_id = tenant_named(session, name)
    if tenant_id is None:
        raise typer.BadParameter(f"no tenant named {name!r}", param_hint="--tenant")
    return tenant_id


def list_command(settings: Settings, tenant: str | None, limit: int) -> None:
    runtime = open_runtime(settings)
    try:
        with runtime.sessions() as session:
            page = list_entries(session, _tenant_id(session, tenant), limit=limit)
            names = tenant_names(session)
    finally:
        runtime.close()
        stop_embedded_postgres()  # the one this command started, if any
    # Plain tab-separated lines: whole ids (what `DELETE /v1/cache/entries/{id}` takes) at
    # any terminal width, and easy to grep.
    typer.echo("id\ttenant\tmodel\thits\texpires (UTC)\tanswer")
    for row in page.entries:
        answer = (row.text if row.embedding_dimensions is None
                  else f"<{row.embedding_dimensions}-dimensional vectors>")
        typer.echo("\t".join((str(row.id), names.get(row.tenant_id, "?"), row.model,
                              str(row.hits), f"{row.expires_at:%Y-%m-%d %H:%M}",
                              " ".join(answer.split())[:60])))
    if page.has_more:
        typer.echo(f"(the newest {limit} shown; --limit shows more)")


def stats_command(settings: Settings, tenant: str | None) -> None:
    runtime = open_runtime(settings)
    try:
        with runtime.sessions() as session:
            stats = cache_stats(session, _tenant_id(session, tenant))
    finally:
        runtime.close()
        stop_embedded_postgres()  # the one this command started, if any
    table = Table(title=f"exact result cache: {tenant or 'all tenants'}")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("entries", str(stats.entries))
    table.add_row("hits on those entries", str(stats.entry_hits))
    table.add_row("jobs answered from the cache", str(stats.hits))
    table.add_row("misses (cacheable jobs that ran)", str(stats.misses))
    table.add_row("saved (what producing them cost)", f"${stats.saved_usd:f}")
    Console().print(table)


def purge_command(settings: Settings, tenant: str | None) -> None:
    runtime = open_runtime(settings)
    try:
        with runtime.sessions() as session:
            deleted = purge_entries(session, _tenant_id(session, tenant))
            session.commit()
    finally:
        runtime.close()
        stop_embedded_postgres()  # the one this command started, if any
    typer.echo(f"deleted {deleted} cache entries ({tenant or 'all tenants'})")
