"""Group commit for single-job submissions: concurrent `POST /v1/jobs` requests are written
many per statement, so they share its round trip and its commit (a commit waits for the
WAL to reach disk; one per job capped intake at a few hundred jobs a second).

The writer is a task on the requests' own event loop with a connection of its own in
autocommit: while one group's statement is out, the submissions that arrive wait in a
list, and the next statement takes them all. One statement is one transaction, so a group
costs one round trip (no BEGIN, no COMMIT) and no thread, queue or wake-up between the
loop and a writer. Each event loop that submits gets its own writer and connection (a
test client may run several loops in turn); a writer with nothing to write for
`IDLE_SECONDS` closes its connection and ends, as it does when its loop shuts down.

Nothing is answered before it is durable: a request's future resolves only after the
statement holding its job has returned, committed. A group whose statement fails is
written again one submission per statement, so one bad job fails alone. Jobs the exact
cache answers are written (succeeded, with their results and ledger rows) in a
transaction of their own in the thread pool, beside the next groups.

Only submissions that need nothing per request from the database go this way: no
Idempotency-Key (a replay must read the original), no queued-jobs limit and no budget
for the tenant (those take a per-tenant lock and count). The rest take `submit`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from sqlalchemy.orm import Session, sessionmaker

from cache.keys import CachePolicy
from models.result_cache import CachedAnswer
from models.single_jobs import (
    SingleJobSubmission,
    StoredSingleJob,
    insert_single_job_submissions,
    single_job_submission,
    write_single_jobs,
)
from models.submissions import NewJob
from models.tenants import TenantRef
from observability import metrics
from observability.tracing import current_traceparent
from penny.database import connection_is_dead

# Past this many waiting submissions a statement is cut: it stays small and the first in
# line does not wait behind a long tail.
MAX_GROUP = 256
# A writer ends (closing its connection) after this long with nothing to write, and
# starts again on demand.
IDLE_SECONDS = 5.0

Connect = Callable[[], Awaitable[AsyncConnection[Any]]]


@dataclass
class _Pending:
    entry: SingleJobSubmission
    future: asyncio.Future[StoredSingleJob]


class GroupCommitWriter:
    def __init__(self, sessions: sessionmaker[Session], cache: CachePolicy | None,
                 connect: Connect) -> None:
        """`connect` opens an autocommit connection (`penny.database.connect_async`);
        `sessions` write the jobs the exact cache answers."""
        self._sessions = sessions
        self._cache = cache
        self._connect = connect
        self._writers: dict[asyncio.AbstractEventLoop, _LoopWriter] = {}

    async def submit(self, tenant: TenantRef, job: NewJob, payload_hash: str
                     ) -> StoredSingleJob:
        """Queue one single-job submission; return once it is committed."""
        entry = single_job_submission(tenant.id, job, payload_hash, self._cache,
                                      current_traceparent())
        loop = asyncio.get_running_loop()
        writer = self._writers.get(loop)
        if writer is None:
            # Loops a test client ran and closed leave no writer behind.
            for closed in [other for other in self._writers if other.is_closed()]:
                del self._writers[closed]
            writer = self._writers[loop] = _LoopWriter(loop, self._connect, self._sessions)
        return await writer.submit(entry)


class _LoopWriter:
    """The writer of one event loop; only that loop touches it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, connect: Connect,
                 sessions: sessionmaker[Session]) -> None:
        self._loop = loop
        self._connect = connect
        self._sessions = sessions
        self._pending: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None  # set while idle
        self._connection: AsyncConnection[Any] | None = None
        self._hit_writes: set[asyncio.Task[None]] = set()

    def submit(self, entry: SingleJobSubmission) -> asyncio.Future[StoredSingleJob]:
        future: asyncio.Future[StoredSingleJob] = self._loop.create_future()
        self._pending.append(_Pending(entry, future))
        if self._task is None:
            self._task = self._loop.create_task(self._run(), name="group-commit")
        elif self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
        return future

    async def _run(self) -> None:
        try:
            while await self._more():
                group = self._pending[:MAX_GROUP]
                del self._pending[:MAX_GROUP]
                await self._write(group)
        finally:
            # No await from the last look at the list to here: a submission that came
            # meanwhile would have been seen there.
            self._task = None
            await self._let_go()

    async def _more(self) -> bool:
        """Whether there is a group to write, waiting up to IDLE_SECONDS for one."""
        if self._pending:
            return True
        wake = self._wake = self._loop.create_future()
        timer = self._loop.call_later(IDLE_SECONDS, _settle, wake)
        try:
            await wake
        finally:
            timer.cancel()
            self._wake = None
        return bool(self._pending)

    async def _write(self, group: list[_Pending]) -> None:
        try:
            stored, found = await self._statement([p.entry for p in group])
        except Exception as error:
            if len(group) == 1:
                _reject(group[0].future, error)
                return
            # One bad row (or a connection lost) must not fail the others: one by one.
            for pending in group:
                await self._write([pending])
            return
        for pending, one in zip(group, stored, strict=True):
            if one is not None:
                _resolve(pending.future, one)
        if found:
            hits = [group[position] for position in found]
            task = self._loop.create_task(self._write_hits(hits, list(found.values())))
            self._hit_writes.add(task)  # kept until done: the loop holds tasks weakly
            task.add_done_callback(self._hit_writes.discard)

    async def _statement(self, entries: Sequence[SingleJobSubmission]
                         ) -> tuple[list[StoredSingleJob | None], dict[int, CachedAnswer]]:
        connection = self._connection
        if connection is not None and connection_is_dead(connection):
            # The server ended it while it waited (a restart, a terminated backend, an
            # idle timeout): a fresh one instead, as the pool does at checkout.
            await self._let_go()
            connection = None
        if connection is None:
            connection = self._connection = await self._connect()
        try:
            return await write_single_jobs(connection, entries)
        except BaseException:
            if connection.broken or connection.closed:
                await self._let_go()
            raise

    async def _write_hits(self, hits: list[_Pending], answers: list[CachedAnswer]) -> None:
        """The entries the cache answered, written succeeded in one transaction in the
        thread pool (one by one if that fails, so one bad job fails alone)."""
        try:
            stored = await asyncio.to_thread(self._commit_hits, [p.entry for p in hits],
                                             answers)
        except Exception as error:
            if len(hits) == 1:
                _reject(hits[0].future, error)
                return
            for pending, answer in zip(hits, answers, strict=True):
                await self._write_hits([pending], [answer])
            return
        for pending, one in zip(hits, stored, strict=True):
            _resolve(pending.future, one)
        metrics.record_exact_cache_hits(p.entry.job.model for p in hits)

    def _commit_hits(self, entries: list[SingleJobSubmission], answers: list[CachedAnswer]
                     ) -> list[StoredSingleJob]:
        keyed = {(entry.tenant_id, answer.cache_key): answer
                 for entry, answer in zip(entries, answers, strict=True)}
        with self._sessions() as session:
            stored = insert_single_job_submissions(session, entries, keyed)
            session.commit()
        return stored

    async def _let_go(self) -> None:
        """Close the connection (closing one that already failed may fail again)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _resolve(future: asyncio.Future[StoredSingleJob], result: StoredSingleJob) -> None:
    if not future.done():  # the client went away; the job is stored all the same
        future.set_result(result)


def _reject(future: asyncio.Future[StoredSingleJob], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
