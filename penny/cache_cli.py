"""`penny cache`: the exact and semantic result caches from an operator's shell, straight
against the database (no API needed)."""

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
from models.semantic_cache_admin import (
    correct_entry,
    list_semantic_entries,
    purge_semantic_entries,
)
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
            tenant_id = _tenant_id(session, tenant)
            deleted = purge_entries(session, tenant_id)
            semantic = purge_semantic_entries(session, tenant_id)
            session.commit()
    finally:
        runtime.close()
    typer.echo(f"deleted {deleted} cache entries and {semantic} semantic cache entries "
               f"({tenant or 'all tenants'})")


def list_semantic_command(settings: Settings, tenant: str | None, limit: int) -> None:
    runtime = open_runtime(settings)
    try:
        with runtime.sessions() as session:
            page = list_semantic_entries(session, _tenant_id(session, tenant), limit=limit)
            names = tenant_names(session)
    finally:
        runtime.close()
    typer.echo("id\ttenant\tmodel\thits\texpires (UTC)\tquestion\tanswer")
    for row in page.entries:
        corrected = " (corrected)" if row["corrected_at"] is not None else ""
        typer.echo("\t".join((str(row["id"]), names.get(row["tenant_id"], "?"), row["model"],
                              str(row["hits"]), f"{row['expires_at']:%Y-%m-%d %H:%M}",
                              " ".join(row["question"].split())[:60],
                              " ".join(row["text"].split())[:60] + corrected)))
    if page.has_more:
        typer.echo(f"(the newest {limit} shown; --limit shows more)")


def correct_command(settings: Settings, entry_id: str, answer: str) -> None:
    try:
        parsed = uuid.UUID(entry_id)
    except ValueError:
        raise typer.BadParameter(f"{entry_id!r} is not an entry id",
                                 param_hint="ENTRY_ID") from None
    runtime = open_runtime(settings)
    try:
        with runtime.sessions() as session:
            kind = correct_entry(session, None, parsed, answer)
            session.commit()
    finally:
        runtime.close()
    if kind is None:
        raise typer.BadParameter(f"no cache entry with id {entry_id}", param_hint="ENTRY_ID")
    typer.echo(f"corrected {kind} cache entry {entry_id}")
