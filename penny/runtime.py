"""The shared plumbing every role opens: settings, database (migrated), object store."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from models.retrying import is_connection_failure, pauses
from penny.database import (
    make_engine,
    make_sessionmaker,
    migrate,
    resolve_database_url,
    stop_embedded_postgres,
)
from penny.errors import MissingCapability
from penny.settings import Settings
from storage.factory import object_store
from storage.port import ObjectStore

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    database_url: str
    db: Engine
    sessions: sessionmaker[Session]
    store: ObjectStore
    # The data directory of the embedded Postgres this runtime started; None when it
    # uses a server given by URL (or has let go of its own).
    embedded_data_dir: Path | None = None

    def close(self) -> None:
        """Close the connection pool and let go of the embedded Postgres this runtime
        started (it stops unless someone else still holds it); a server it did not start
        is left running."""
        self.db.dispose()
        if self.embedded_data_dir is not None:
            data_dir, self.embedded_data_dir = self.embedded_data_dir, None
            stop_embedded_postgres(data_dir)


def _migrate_when_reachable(url: str, within_seconds: float) -> None:
    """A role that starts while Postgres restarts (or before it is up) waits for it rather
    than exiting: the same window the workers give a claim."""
    next_pause = pauses(within_seconds)
    while True:
        try:
            migrate(url)
            return
        except DBAPIError as error:
            pause = next_pause() if is_connection_failure(error) else None
            if pause is None:
                raise
            log.warning("the database is not reachable yet (%s); trying again in %.1fs",
                        type(error.orig).__name__ if error.orig else type(error).__name__,
                        pause)
            time.sleep(pause)


def open_runtime(settings: Settings, *, run_migrations: bool = True) -> Runtime:
    url = resolve_database_url(settings)
    embedded_data_dir = None if settings.database_url else settings.data_dir
    try:
        if run_migrations:
            _migrate_when_reachable(url, settings.database_retry_seconds)
        db = make_engine(url, pool_size=settings.database_pool_size,
                         max_overflow=settings.database_max_overflow,
                         feature_tag=settings.report_feature_tag)
        sessions = make_sessionmaker(db)
        if settings.semantic_cache:
            _require_pgvector(sessions, db)
        store = object_store(settings)
    except BaseException:
        if embedded_data_dir is not None:
            stop_embedded_postgres(embedded_data_dir)
        raise
    return Runtime(
        settings=settings,
        database_url=url,
        db=db,
        sessions=sessions,
        store=store,
        embedded_data_dir=embedded_data_dir,
    )


def _require_pgvector(sessions: sessionmaker[Session], db: Engine) -> None:
    """Refuse to start with the semantic cache on where its vector table cannot exist."""
    from models.semantic_cache import semantic_table_present

    with sessions() as session:
        present = semantic_table_present(session)
    if not present:
        db.dispose()
        raise MissingCapability(
            "PENNY_SEMANTIC_CACHE is on, but this Postgres has no pgvector extension "
            "(`vector`), so the semantic cache has nowhere to keep its vectors. Install "
            "pgvector on the server (or use the embedded Postgres, which has it) and start "
            "again, or set PENNY_SEMANTIC_CACHE=false.")
