"""Riding out a database that went away (a Postgres restart, a failover, a dropped
connection) on the paths that move work: claiming a batch, recording it, failing it over.

Each try runs in a fresh session, so a try never reuses the connection that failed: the
pool invalidates a connection whose error says it is gone, and the next checkout gets a new
one. Only errors that say the connection or server failed are retried; anything else is a
bug or a conflict, and retrying it would only hide it.

A try must be safe to repeat: the claim and record queries are conditional updates fenced
by the batch's status and claim token. If a commit reached the server but its answer was
lost, the repeat finds the batch already moved and changes nothing (a claim then waits for
its lease to run out; a record reports the batch as taken, and its results are already in).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_PAUSE_SECONDS = 0.2
MAX_PAUSE_SECONDS = 5.0


def is_connection_failure(error: BaseException) -> bool:
    """The server or the connection failed, not the statement: worth another try."""
    if isinstance(error, OperationalError | InterfaceError):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


def pauses(within_seconds: float) -> Callable[[], float | None]:
    """Successive pauses between tries (doubling up to MAX_PAUSE_SECONDS), then None once
    `within_seconds` have passed since the first call."""
    deadline = time.monotonic() + within_seconds
    pause = FIRST_PAUSE_SECONDS

    def next_pause() -> float | None:
        nonlocal pause
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        this, pause = min(pause, left), min(pause * 2, MAX_PAUSE_SECONDS)
        return this

    return next_pause


def with_retries(sessions: sessionmaker[Session], work: Callable[[Session], T], *,
                 within_seconds: float, what: str,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """Run `work` in a fresh session; while the database is unreachable, try again for up to
    `within_seconds`, then let the last error through."""
    next_pause = pauses(within_seconds)
    tries = 0
    while True:
        tries += 1
        try:
            with sessions() as session:
                result = work(session)
            if tries > 1:
                log.info("%s succeeded on try %d, the database is back", what, tries)
            return result
        except DBAPIError as error:
            if not is_connection_failure(error):
                raise
            pause = next_pause()
            if pause is None:
                log.error("%s: the database stayed unreachable; giving up after %d tries",
                          what, tries)
                raise
            log.warning("%s: the database is unreachable (%s); trying again in %.1fs", what,
                        type(error.orig).__name__ if error.orig else type(error).__name__,
                        pause)
            sleep(pause)
