"""Group commit of single-job submissions against a real Postgres: submissions waiting
together share one transaction, none is answered before its transaction commits, a job
that cannot be stored fails alone, and a group's exact-cache lookup answers only the
tenant's own live entries."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import event, func, select, text

from cache.keys import CachePolicy
from intake.group_commit import GroupCommitWriter
from intake.limits import IntakeLimits
from intake.schema import JobRequest
from intake.service import jobs_for_requests
from models.submissions import NewJob, StoredSingleJob
from models.tables import Job, LedgerEntry, Result, ResultCacheEntry, Submission
from models.tenants import TenantRef, ensure_tenant
from penny.runtime import Runtime


class HeldWriter:
    """The runtime's engine, except that the first transaction begun on it from here on
    waits at its start until `release` is set: the writer's first group holds it, and
    everything submitted meanwhile queues up behind it."""

    def __init__(self, runtime: Runtime) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.begun = 0
        event.listen(runtime.db, "begin", self._begin)

    def _begin(self, _connection: object) -> None:
        self.begun += 1
        if self.begun == 1:
            self.started.set()
            assert self.release.wait(60), "the test never released the first transaction"


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


def count_commits(runtime: Runtime) -> list[int]:
    commits: list[int] = []
    event.listen(runtime.db, "commit", lambda _conn: commits.append(1))
    return commits


def test_waiting_submissions_share_one_transaction_and_wait_for_its_commit(
    runtime: Runtime, tenant: TenantRef
) -> None:
    held = HeldWriter(runtime)
    writer = GroupCommitWriter(runtime.sessions, cache=None)
    commits = count_commits(runtime)

    async def scenario() -> list[StoredSingleJob]:
        first = asyncio.create_task(writer.submit(tenant, job(runtime, 0), "h0"))
        await asyncio.to_thread(held.started.wait, 60)
        rest = [asyncio.create_task(writer.submit(tenant, job(runtime, n), f"h{n}"))
                for n in range(1, 40)]
        await asyncio.sleep(0.2)  # room for a wrong answer to arrive early
        assert not any(task.done() for task in [first, *rest])  # nothing is committed yet
        held.release.set()
        return await asyncio.gather(first, *rest)

    stored = asyncio.run(scenario())
    assert len(commits) == 2  # the first alone, then the 39 that waited behind it together
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


def test_a_job_that_cannot_be_stored_fails_alone(runtime: Runtime, tenant: TenantRef) -> None:
    held = HeldWriter(runtime)
    writer = GroupCommitWriter(runtime.sessions, cache=None)
    # The model column holds 200 characters: Postgres refuses this row.
    unstorable = NewJob(line_no=0, model="m" * 300, request={"prompt": "x"},
                        estimated_tokens=1)

    async def scenario() -> list[StoredSingleJob | BaseException]:
        first = asyncio.create_task(writer.submit(tenant, job(runtime, 0), "h0"))
        await asyncio.to_thread(held.started.wait, 60)
        group = [asyncio.create_task(writer.submit(tenant, job(runtime, 1), "h1")),
                 asyncio.create_task(writer.submit(tenant, unstorable, "bad")),
                 asyncio.create_task(writer.submit(tenant, job(runtime, 2), "h2"))]
        held.release.set()
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
    held = HeldWriter(runtime)
    writer = GroupCommitWriter(runtime.sessions, cache=policy)
    commits = count_commits(runtime)

    async def scenario() -> list[StoredSingleJob]:
        first = asyncio.create_task(writer.submit(tenant, job(runtime, 3), "first"))
        await asyncio.to_thread(held.started.wait, 60)
        group = [asyncio.create_task(writer.submit(tenant, job(runtime, n), f"h{n}"))
                 for n in range(4)]
        group.append(asyncio.create_task(writer.submit(other, job(runtime, 0), "other")))
        held.release.set()
        return await asyncio.gather(first, *group)

    first, *group = asyncio.run(scenario())
    assert len(commits) == 2  # the hit is written in its group's transaction
    # Only the tenant's own live entry answers: not another tenant's, not an expired one.
    assert [s.from_cache for s in [first, *group]] == [False, True, False, False, False, False]
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
    writer = GroupCommitWriter(runtime.sessions, cache=None)

    async def submit(n: int) -> StoredSingleJob:
        return await writer.submit(tenant, job(runtime, n), f"h{n}")

    first = asyncio.run(submit(0))
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
            left = session.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = "
                                        "ANY(:pids)"), {"pids": list(ended)}).scalar_one()
            session.commit()  # the next look takes a fresh snapshot of the activity
            if not left:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the ended sessions never went away")
    second = asyncio.run(submit(1))  # a group of one: nothing to retry it one by one
    found = stored_jobs(runtime, [str(first.submission_id), str(second.submission_id)])
    assert found == {str(s.submission_id): [str(s.job_id)] for s in (first, second)}
