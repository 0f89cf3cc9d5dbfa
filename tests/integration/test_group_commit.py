"""Group commit of single-job submissions against a real Postgres: submissions waiting
together share one statement and its transaction, none is answered before that commits,
a job that cannot be stored fails alone, a group's exact-cache lookup answers only the
tenant's own live entries, and the writer's connection is replaced when the server ends
it and closed when the writer stops."""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from cache.keys import CachePolicy
from coalescer.single_flight import single_flight_key
from intake import group_commit
from intake.group_commit import GroupCommitWriter
from intake.limits import IntakeLimits
from intake.schema import JobRequest
from intake.service import jobs_for_requests
from models.single_jobs import StoredSingleJob
from models.submissions import NewJob, insert_submission
from models.tables import Job, LedgerEntry, Result, ResultCacheEntry, Submission
from models.tenants import TenantRef, ensure_tenant
from penny.database import connect_async
from penny.runtime import Runtime


def writer_of(runtime: Runtime, cache: CachePolicy | None = None) -> GroupCommitWriter:
    return GroupCommitWriter(runtime.sessions, cache,
                             functools.partial(connect_async, runtime.database_url))


class HeldInserts:
    """A transaction holding a lock that every INSERT into submissions waits for: the
    writer's first statement blocks on it, and everything submitted meanwhile queues up
    behind it until `release`."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._session: Session = runtime.sessions()
        self._session.execute(text("LOCK TABLE submissions IN SHARE MODE"))

    async def blocked(self) -> None:
        """Return once a statement is waiting for the lock."""
        for _ in range(600):
            with self._runtime.sessions() as session:
                if session.execute(text(
                        "SELECT count(*) FROM pg_locks WHERE NOT granted "
                        "AND relation = 'submissions'::regclass")).scalar_one():
                    return
            await asyncio.sleep(0.05)
        raise AssertionError("no statement ever waited for the held lock")

    def release(self) -> None:
        self._session.rollback()
        self._session.close()


@pytest.fixture
def tenant(runtime: Runtime) -> TenantRef:
    with runtime.sessions() as session:
        found = ensure_tenant(session, "default")
        session.commit()
    return found


def job(runtime: Runtime, n: int) -> NewJob:
    request = JobRequest.model_validate(
        {"messages": [{"role": "user", "content": f"question {n}"}], "max_tokens": 8})
    return jobs_for_requests([request], IntakeLimits.from_settings(runtime.settings))[0]


def stored_jobs(runtime: Runtime, submission_ids: list[str]) -> dict[str, list[str]]:
    with runtime.sessions() as session:
        rows = session.execute(
            select(Submission.id, func.array_agg(Job.id))
            .join(Job, Job.submission_id == Submission.id)
            .where(Submission.id.in_(submission_ids)).group_by(Submission.id)).all()
    return {str(sid): sorted(str(j) for j in job_ids) for sid, job_ids in rows}


def transactions(runtime: Runtime, stored: list[StoredSingleJob]) -> list[int]:
    """How many of these jobs each transaction wrote (rows written by one transaction
    share its id, `xmin`), in the order of the jobs given."""
    with runtime.sessions() as session:
        writer_of_row = dict(session.execute(
            select(Job.id, text("xmin::text")).where(
                Job.id.in_([s.job_id for s in stored]))).all())
    sizes = Counter(writer_of_row.values())
    return [sizes[writer_of_row[s.job_id]] for s in stored]


def other_backends(runtime: Runtime) -> int:
    """Sessions on the database other than the pool's (disposed first) and this one."""
    runtime.db.dispose()
    with runtime.sessions() as session:
        return int(session.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()")).scalar_one())


def test_waiting_submissions_share_one_statement_and_wait_for_its_commit(
    runtime: Runtime, tenant: TenantRef
) -> None:
    writer = writer_of(runtime)
    held = HeldInserts(runtime)

    async def scenario() -> list[StoredSingleJob]:
        first = asyncio.create_task(writer.submit(tenant, job(runtime, 0), "h0"))
        await held.blocked()
        rest = [asyncio.create_task(writer.submit(tenant, job(runtime, n), f"h{n}"))
                for n in range(1, 40)]
        await asyncio.sleep(0.2)  # room for a wrong answer to arrive early
        assert not any(task.done() for task in [first, *rest])  # nothing is committed yet
        held.release()
        answered = await first
        # Answered only once committed: another session sees it at once.
        assert stored_jobs(runtime, [str(answered.submission_id)]) == {
            str(answered.submission_id): [str(answered.job_id)]}
        return [answered, *await asyncio.gather(*rest)]

    stored = asyncio.run(scenario())
    # The first alone, then the 39 that waited behind it together.
    assert transactions(runtime, stored) == [1] + [39] * 39
    found = stored_jobs(runtime, [str(s.submission_id) for s in stored])
    assert found == {str(s.submission_id): [str(s.job_id)] for s in stored}
    with runtime.sessions() as session:
        rows = session.execute(
            select(Submission.id, Submission.kind, Submission.total_jobs,
                   Submission.request_hash)
            .where(Submission.id.in_([s.submission_id for s in stored]))).all()
    assert all(kind == "job" and total == 1 for _, kind, total, _ in rows)
    # Each request is answered with its own submission: the one holding its hash.
    hashes = {submission_id: request_hash for submission_id, _, _, request_hash in rows}
    assert [hashes[s.submission_id] for s in stored] == [f"h{n}" for n in range(40)]
    assert not any(s.from_cache for s in stored)


def test_a_job_is_stored_with_its_single_flight_key(runtime: Runtime, tenant: TenantRef
                                                    ) -> None:
    asked = job(runtime, 7)
    policy = CachePolicy(enabled=True, ttl=timedelta(days=1),
                         identities={asked.model: "0" * 64})
    stored = asyncio.run(writer_of(runtime, policy).submit(tenant, asked, "h"))
    with runtime.sessions() as session:
        key = session.execute(select(Job.single_flight_key).where(
            Job.id == stored.job_id)).scalar_one()
    assert key == single_flight_key(str(tenant.id), asked.model, asked.request)


def test_a_job_that_cannot_be_stored_fails_alone(runtime: Runtime, tenant: TenantRef) -> None:
    writer = writer_of(runtime)
    held = HeldInserts(runtime)
    # The model column holds 200 characters: Postgres refuses this row.
    unstorable = NewJob(line_no=0, model="m" * 300, request={"prompt": "x"},
                        estimated_tokens=1)

    async def scenario() -> list[StoredSingleJob | BaseException]:
        first = asyncio.create_task(writer.submit(tenant, job(runtime, 0), "h0"))
        await held.blocked()
        group = [asyncio.create_task(writer.submit(tenant, job(runtime, 1), "h1")),
                 asyncio.create_task(writer.submit(tenant, unstorable, "bad")),
                 asyncio.create_task(writer.submit(tenant, job(runtime, 2), "h2"))]
        await asyncio.sleep(0.05)
        held.release()
        return await asyncio.gather(first, *group, return_exceptions=True)

    first, good_1, bad, good_2 = asyncio.run(scenario())
    assert isinstance(bad, Exception) and "too long" in str(bad)
    good = [s for s in (first, good_1, good_2) if isinstance(s, StoredSingleJob)]
    assert len(good) == 3
    assert set(stored_jobs(runtime, [str(s.submission_id) for s in good])) == {
        str(s.submission_id) for s in good}
    with runtime.sessions() as session:
        assert session.execute(select(func.count()).select_from(Job)).scalar_one() == 3
        assert session.execute(
            select(func.count()).select_from(Submission)).scalar_one() == 3


def cache_entry(runtime: Runtime, tenant: TenantRef, model: str, key: str,
                expires_in: timedelta) -> uuid.UUID:
    """An exact result cache entry of `tenant`'s under `key` (as a recorded batch fills
    one), live for `expires_in` (negative: already expired)."""
    entry_id = uuid.uuid4()
    with runtime.sessions() as session:
        session.add(ResultCacheEntry(
            id=entry_id, tenant_id=tenant.id, cache_key=key, model=model,
            model_identity="0" * 64, request={}, source_job_id=uuid.uuid4(), text="Paris",
            finish_reason="stop", prompt_tokens=10, cached_tokens=0, output_tokens=2,
            cost_usd=Decimal("0.0001"), list_cost_usd=Decimal("0.001"),
            expires_at=datetime.now(UTC) + expires_in))
        session.commit()
    return entry_id


def test_a_group_looks_its_keys_up_in_its_insert_and_answers_only_live_entries_of_the_tenant(
    runtime: Runtime, tenant: TenantRef
) -> None:
    with runtime.sessions() as session:
        other = ensure_tenant(session, "other")
        session.commit()
    asked = job(runtime, 0)
    policy = CachePolicy(enabled=True, ttl=timedelta(days=1),
                         identities={asked.model: "0" * 64})
    key_of = {n: policy.key(asked.model, job(runtime, n).request) for n in range(4)}
    hit_entry = cache_entry(runtime, tenant, asked.model, str(key_of[0]), timedelta(days=1))
    cache_entry(runtime, other, asked.model, str(key_of[1]), timedelta(days=1))  # another tenant's
    cache_entry(runtime, tenant, asked.model, str(key_of[2]), timedelta(seconds=-1))  # expired
    writer = writer_of(runtime, policy)
    held = HeldInserts(runtime)

    async def scenario() -> list[StoredSingleJob]:
        first = asyncio.create_task(writer.submit(tenant, job(runtime, 3), "first"))
        await held.blocked()
        group = [asyncio.create_task(writer.submit(tenant, job(runtime, n), f"h{n}"))
                 for n in range(4)]
        group.append(asyncio.create_task(writer.submit(other, job(runtime, 0), "other")))
        await asyncio.sleep(0.05)
        held.release()
        return await asyncio.gather(first, *group)

    first, *group = asyncio.run(scenario())
    # Only the tenant's own live entry answers: not another tenant's, not an expired one.
    assert [s.from_cache for s in [first, *group]] == [False, True, False, False, False, False]
    # The misses went in together; the hit in a transaction of its own.
    assert transactions(runtime, [first, *group]) == [1, 1, 4, 4, 4, 4]
    found = stored_jobs(runtime, [str(s.submission_id) for s in [first, *group]])
    assert found == {str(s.submission_id): [str(s.job_id)] for s in [first, *group]}
    with runtime.sessions() as session:
        statuses = dict(session.execute(select(Job.id, Job.status)).all())
        assert [statuses[s.job_id] for s in [first, *group]] == [
            "queued", "succeeded", "queued", "queued", "queued", "queued"]
        results = session.execute(select(Result.job_id, Result.text)).all()
        assert results == [(group[0].job_id, "Paris")]
        billed = session.execute(select(LedgerEntry.job_id, LedgerEntry.cost_usd,
                                        LedgerEntry.served_by)).all()
        assert billed == [(group[0].job_id, Decimal(0), "exact_cache")]
        assert session.get(ResultCacheEntry, hit_entry).hits == 1  # type: ignore[union-attr]


def test_the_writer_rides_out_the_server_ending_its_connection_between_groups(
    runtime: Runtime, tenant: TenantRef
) -> None:
    writer = writer_of(runtime)

    def end_other_sessions() -> None:
        # The writer keeps its connection between groups: end every other session on the
        # database (a restart or an administrator would), the writer's among them.
        with runtime.sessions() as session:
            ended = session.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()")).scalars().all()
            assert ended, "the writer's session was not found"
            for pid in ended:
                session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            # Gone from the server (its goodbye written to the socket) before the next group.
            for _ in range(600):
                left = session.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)"),
                    {"pids": list(ended)}).scalar_one()
                session.commit()  # the next look takes a fresh snapshot of the activity
                if not left:
                    return
                time.sleep(0.05)
        raise AssertionError("the ended sessions never went away")

    async def scenario() -> tuple[StoredSingleJob, StoredSingleJob]:
        first = await writer.submit(tenant, job(runtime, 0), "h0")
        await asyncio.to_thread(end_other_sessions)
        # A group of one, on the same loop's writer: nothing to retry it one by one.
        return first, await writer.submit(tenant, job(runtime, 1), "h1")

    first, second = asyncio.run(scenario())
    found = stored_jobs(runtime, [str(first.submission_id), str(second.submission_id)])
    assert found == {str(s.submission_id): [str(s.job_id)] for s in (first, second)}


@pytest.fixture
def short_idle(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(group_commit, "IDLE_SECONDS", 0.2)
    yield


def test_the_writer_closes_its_connection_when_idle_and_when_its_loop_ends(
    runtime: Runtime, tenant: TenantRef, short_idle: None
) -> None:
    writer = writer_of(runtime)
    before = other_backends(runtime)

    async def scenario() -> tuple[int, int]:
        await writer.submit(tenant, job(runtime, 0), "h0")
        while_writing = await asyncio.to_thread(other_backends, runtime)
        await asyncio.sleep(1.0)  # idle for longer than IDLE_SECONDS
        idle = await asyncio.to_thread(other_backends, runtime)
        await writer.submit(tenant, job(runtime, 1), "h1")  # starts again on demand
        return while_writing, idle

    while_writing, idle = asyncio.run(scenario())
    assert (while_writing, idle) == (before + 1, before)
    # The loop ended with the writer started again: closed with it, nothing left open.
    assert other_backends(runtime) == before
    with runtime.sessions() as session:
        assert session.execute(select(func.count()).select_from(Job)).scalar_one() == 2


def test_a_job_is_stored_as_bulk_intake_stores_it(runtime: Runtime, tenant: TenantRef
                                                   ) -> None:
    """The group's JSON document against bulk intake's COPY: the same columns come out,
    documents, nulls and the deadline included."""
    asked = replace(job(runtime, 9), custom_id="c-9", tags={"team": "x", "n": "1"},
                    priority=-3, complete_within=timedelta(hours=2), client_retry_count=1,
                    route={"mode": "auto", "tier": "small"})
    columns = (Job.model, Job.request, Job.tags, Job.priority, Job.estimated_tokens,
               Job.status, Job.error, Job.finished_at, Job.cache_mode, Job.custom_id,
               Job.single_flight_key, Job.input_row, Job.route, Job.client_retry_count)
    grouped = asyncio.run(writer_of(runtime).submit(tenant, asked, "h")).job_id
    with runtime.sessions() as session:
        bulk = insert_submission(session, tenant_id=tenant.id, kind="bulk", request_hash="b",
                                 jobs=[asked], idempotency_key=None)
        session.commit()
        assert bulk is not None
        rows = {row[0]: row[1:] for row in session.execute(
            select(Job.id, *columns, Job.deadline_at - Job.created_at))}
    assert rows[grouped][:-1] == rows[bulk.job_ids[0]][:-1]
    assert rows[grouped][2] == {"team": "x", "n": "1"} and rows[grouped][6] is None
    # Two hours from when each was queued (give or take the moment between the two).
    assert abs(rows[grouped][-1] - timedelta(hours=2)) < timedelta(seconds=5)
