"""The shared plumbing every role opens: settings, database (migrated), object store."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from penny.database import make_engine, make_sessionmaker, migrate, resolve_database_url
from penny.settings import Settings
from storage.factory import object_store
from storage.port import ObjectStore


@dataclass
class Runtime:
    settings: Settings
    database_url: str
    db: Engine
    sessions: sessionmaker[Session]
    store: ObjectStore

    def close(self) -> None:
        self.db.dispose()


def open_runtime(settings: Settings, *, run_migrations: bool = True) -> Runtime:
    url = resolve_database_url(settings)
    if run_migrations:
        migrate(url)
    db = make_engine(url, pool_size=settings.database_pool_size,
                     max_overflow=settings.database_max_overflow)
    return Runtime(
        settings=settings,
        database_url=url,
        db=db,
        sessions=make_sessionmaker(db),
        store=object_store(settings),
    )
