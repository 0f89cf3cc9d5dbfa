"""Group commit for single-job submissions: concurrent `POST /v1/jobs` requests are written
by one thread, many per transaction, so they share its statements and its commit (a
commit waits for the WAL to reach disk; one per job capped intake at a few hundred jobs
a second).

Nothing is answered before it is durable: a request's future resolves only after the
transaction holding its job has committed. A group whose transaction fails is written
again one submission per transaction, so one bad job fails alone.

Only submissions that need nothing per request from the database go this way: no
Idempotency-Key (a replay must read the original), no queued-jobs limit and no budget
for the tenant (those take a per-tenant lock and count). The rest take `submit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection
from sqlalchemy.orm import Session, sessionmaker

from cache.keys import CachePolicy
from models.submissions import (
    NewJob,
    SingleJobSubmission,
    StoredSingleJob,
    insert_single_job_misses,
    insert_single_job_submissions,
    lookup_keys,
)
from models.tenants import TenantRef
from observability import metrics
from observability.tracing import current_traceparent
from penny.database import connection_is_dead

# Past this many waiting submissions a transaction is cut: its statements stay small and
# the first in line does not wait behind a long tail.
MAX_GROUP = 256
# The thread ends after this long with nothing to write (and starts again on demand), so
# an app that is dropped leaves no thread behind.
IDLE_SECONDS = 5.0


@dataclass
class _Pending:
    entry: SingleJobSubmission
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[StoredSingleJob]


class GroupCommitWriter:
    def __init__(self, sessions: sessionmaker[Session], cache: CachePolicy | None) -> None:
        self._sessions = sessions
        self._cache = cache
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # The writer thread's own session on a connection it keeps while it runs: no
        # session made, no pool checkout and return, per group. Only that thread uses it.
        self._session: Session | None = None

    async def submit(self, tenant: TenantRef, job: NewJob, payload_hash: str
                     ) -> StoredSingleJob:
        """Queue one single-job submission; return once it is committed."""
        key = lookup_keys([job], self._cache)[0]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[StoredSingleJob] = loop.create_future()
        entry = SingleJobSubmission(tenant.id, job, payload_hash, key, current_traceparent())
        self._queue.put(_Pending(entry, loop, future))
        self._ensure_running()
        return await future

    def _ensure_running(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="group-commit",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():  # a submit now starts a new thread
                        self._thread = None
                        self._let_go()
                        return
                continue
            group = [first]
            while len(group) < MAX_GROUP:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._write(group)

    def _write(self, group: list[_Pending]) -> None:
        try:
            stored = self._commit([p.entry for p in group])
        except Exception as error:
            if len(group) == 1:
                group[0].loop.call_soon_threadsafe(_reject, group[0].future, error)
                return
            # One bad row (or a connection lost) must not fail the others: one by one.
            for pending in group:
                self._write([pending])
            return
        # One wake-up per event loop for the whole group, not one per request.
        answers: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[StoredSingleJob],
                                                            StoredSingleJob]]] = {}
        for pending, result in zip(group, stored, strict=True):
            answers.setdefault(pending.loop, []).append((pending.future, result))
        for loop, resolved in answers.items():
            loop.call_soon_threadsafe(_resolve, resolved)
        metrics.record_exact_cache_hits(
            p.entry.job.model for p, s in zip(group, stored, strict=True) if s.from_cache)

    def _commit(self, entries: Sequence[SingleJobSubmission]) -> list[StoredSingleJob]:
        session = self._session
        if session is not None and _closed_by_server(session):
            self._let_go()  # as the pool does at checkout: a fresh connection instead
            session = None
        if session is None:
            engine = self._sessions.kw["bind"]
            session = self._session = self._sessions(bind=engine.connect())
        try:
            if all(entry.cache_key is None for entry in entries):
                stored = insert_single_job_submissions(session, entries, {})
            else:
                stored = _insert_looking_up(session, entries)
            session.commit()
        except BaseException:
            # Whatever failed (a row, the connection), the next group starts afresh.
            self._let_go()
            raise
        return stored

    def _let_go(self) -> None:
        """Roll back and close the thread's session, and close its connection for real:
        handed back to the pool it came from, it would stay open there unused if that
        pool has been disposed meanwhile (an engine disposed while the thread idled)."""
        session, self._session = self._session, None
        if session is None:
            return
        connection = session.get_bind()
        # Closing what already failed may fail again; the pool then discards it.
        with contextlib.suppress(Exception):
            session.close()
        with contextlib.suppress(Exception):
            assert isinstance(connection, Connection)
            connection.invalidate()
            connection.close()


def _closed_by_server(session: Session) -> bool:
    """Whether the server ended the kept connection while it waited for a group (a
    restart, a terminated backend, an idle timeout), asking nothing of the server."""
    connection = session.get_bind()
    assert isinstance(connection, Connection)
    if connection.invalidated or connection.closed:
        return True
    return connection_is_dead(connection.connection.dbapi_connection)


def _insert_looking_up(session: Session, entries: Sequence[SingleJobSubmission]
                       ) -> list[StoredSingleJob]:
    """The misses go in with the lookup itself, one statement for the group; only the
    entries found take a second step, which writes them succeeded with the answers that
    statement read. All in the caller's transaction."""
    stored, found = insert_single_job_misses(session, entries)
    if found:
        hits = [entries[position] for position in found]
        answers = {(entry.tenant_id, answer.cache_key): answer
                   for entry, answer in zip(hits, found.values(), strict=True)}
        for position, one in zip(found, insert_single_job_submissions(session, hits, answers),
                                 strict=True):
            stored[position] = one
    done = [one for one in stored if one is not None]
    assert len(done) == len(entries), "every entry is stored once"
    return done


def _resolve(resolved: list[tuple[asyncio.Future[StoredSingleJob], StoredSingleJob]]
             ) -> None:
    for future, result in resolved:
        if not future.cancelled():  # the client went away; the job is queued all the same
            future.set_result(result)


def _reject(future: asyncio.Future[StoredSingleJob], error: BaseException) -> None:
    if not future.cancelled():
        future.set_exception(error)
