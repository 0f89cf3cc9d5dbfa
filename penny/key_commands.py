"""`penny keys create|list|revoke`: tenants' API keys, from the command line. The same
queries serve the admin API (`api/admin.py`)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, TypeVar

import typer
from sqlalchemy.orm import Session

from penny.settings import Settings

keys_app = typer.Typer(no_args_is_help=True, help="Make, list and revoke tenants' API keys.")
T = TypeVar("T")


@contextmanager
def _session() -> Iterator[Session]:
    from penny.runtime import open_runtime

    runtime = open_runtime(Settings())
    try:
        with runtime.sessions() as session:
            yield session
    finally:
        runtime.close()


def _in_session(action: Callable[[Session], T]) -> T:
    with _session() as session:
        result = action(session)
        session.commit()
        return result


def _when(value: object) -> str:
    return "-" if value is None else str(value)[:19]


@keys_app.command("create")
def create(
    tenant: Annotated[str, typer.Argument(help="the tenant the key acts for (created if new)")],
    name: Annotated[str | None, typer.Option(help="a label to tell keys apart")] = None,
) -> None:
    """Make a key for TENANT and print it. It is shown this once: only its hash is kept."""
    from models.tenants import create_key

    info, key = _in_session(lambda s: create_key(s, tenant, name))
    typer.echo(key)
    typer.echo(f"id {info.id}, prefix {info.prefix}, tenant {info.tenant}: store the key now, "
               "it cannot be shown again", err=True)


@keys_app.command("list")
def list_(
    tenant: Annotated[str | None, typer.Option(help="only this tenant's keys")] = None,
) -> None:
    """Every key: id, prefix, tenant, name, created, last used, revoked."""
    from models.tenants import list_keys

    keys = _in_session(lambda s: list_keys(s, tenant))
    typer.echo("id\tprefix\ttenant\tname\tcreated\tlast_used\trevoked")
    for k in keys:
        typer.echo(f"{k.id}\t{k.prefix}\t{k.tenant}\t{k.name or '-'}\t{_when(k.created_at)}\t"
                   f"{_when(k.last_used_at)}\t{_when(k.revoked_at)}")


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="the key's id (from `penny keys list`)")]
           ) -> None:
    """Revoke a key. Servers stop accepting it within PENNY_KEY_CACHE_SECONDS."""
    from models.tenants import revoke_key

    try:
        parsed = uuid.UUID(key_id)
    except ValueError:
        typer.echo(f"penny keys revoke: {key_id!r} is not a key id", err=True)
        raise typer.Exit(code=2) from None
    info = _in_session(lambda s: revoke_key(s, parsed))
    if info is None:
        typer.echo(f"penny keys revoke: no key with id {key_id}", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"revoked {info.prefix} ({info.tenant}) at {_when(info.revoked_at)}")
