"""The exact result cache in the database: the intake lookup, answering hits, filling
entries when a batch records, and the periodic expiry and eviction sweep. Keys and policy
are `cache.keys`; listing and deleting entries is `models.cache_admin`."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    bindparam,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from cache.keys import CachePolicy
from ledger.pricing import cache_hit_ledger
from models.tables import LedgerEntry, Result, ResultCacheEntry

if TYPE_CHECKING:
    from models.queue import JobOutcome

# Postgres takes at most 65,535 parameters per statement; an entry row has about 20.
_ROWS_PER_STATEMENT = 10_000
# The result-row fields an entry keeps and a hit gets back.
_RESULT_FIELDS = ("text", "finish_reason", "prompt_tokens", "cached_tokens", "output_tokens",
                  "mean_logprob", "embedding", "embedding_dimensions",
                  "original_prompt_tokens", "token_logprobs", "choices")


@dataclass(frozen=True)
class CachedAnswer:
    entry_id: uuid.UUID
    cache_key: str
    source_job_id: uuid.UUID
    model: str
    result: dict[str, Any]  # the result row's fields (_RESULT_FIELDS)
    cost_usd: Decimal
    list_cost_usd: Decimal


def _live(keys: Collection[str]) -> ColumnElement[bool]:
    # An expired entry is never served, even before the sweeper removes it.
    return and_(ResultCacheEntry.cache_key.in_(list(keys)),
                ResultCacheEntry.expires_at > func.now())


# Comma-separated hex digests: an array literal that needs no quoting.
_HEX_LIST = re.compile(r"[0-9a-f]+(?:,[0-9a-f]+)*")
ANSWER_COLUMNS = ("id", "cache_key", "source_job_id", "model", "cost_usd", "list_cost_usd",
                  *_RESULT_FIELDS)
# One statement text however many keys are looked up (the keys travel as one array
# parameter), so Postgres plans it once per connection and psycopg prepares it. Sent on
# the session's own connection as plain text: it runs on every single-job intake, where
# the ORM's execution and row machinery cost several times the statement itself.
_LOOKUP = (f"SELECT {', '.join(ANSWER_COLUMNS)} FROM {ResultCacheEntry.__tablename__} "
           "WHERE tenant_id = %s AND cache_key = ANY(%s::text[]) "
           # An expired entry is never served, even before the sweeper removes it.
           "AND expires_at > now()")


def find_cached_answers(
    session: Session, tenant_id: uuid.UUID, keys: Collection[str]
) -> dict[str, CachedAnswer]:
    """The live entries of one tenant under `keys`, in one query on the (tenant, key)
    unique index: the lookup at intake (only for requests that have a key) and when a
    batch is validated. A miss reads no row."""
    driver = session.connection().connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor:
        rows = cursor.execute(_LOOKUP, [tenant_id, _text_array(sorted(keys))]).fetchall()
    return {answer.cache_key: answer for answer in map(answer_of_row, rows)}


def _text_array(keys: list[str]) -> str | list[str]:
    """`keys` as the `text[]` parameter: hex digests (every key penny makes) as the array's
    literal, written in one join; psycopg's list adapter quotes element by element in
    Python, which cost a CSV upload about as much per row as building its COPY line."""
    literal = ",".join(keys)
    return f"{{{literal}}}" if _HEX_LIST.fullmatch(literal) else keys


def answer_of_row(row: Sequence[Any]) -> CachedAnswer:
    """A cached answer from an entry's `ANSWER_COLUMNS`, in that order."""
    entry_id, cache_key, source_job_id, model, cost_usd, list_cost_usd = row[:6]
    return CachedAnswer(
        entry_id=entry_id, cache_key=cache_key, source_job_id=source_job_id, model=model,
        result=dict(zip(_RESULT_FIELDS, row[6:], strict=True)), cost_usd=cost_usd,
        list_cost_usd=list_cost_usd)


@dataclass(frozen=True)
class SourceCosting:
    naive_cost_usd: Decimal
    costed_with: dict[str, Any]  # the source row's card, calibration and baseline


def source_costing(session: Session, source_job_ids: Collection[uuid.UUID]
                   ) -> dict[uuid.UUID, SourceCosting]:
    """The counterfactual of the runs cache hits reuse, from their ledger rows: a hit
    would have cost, the naive way, what its source would have."""
    found: dict[uuid.UUID, SourceCosting] = {}
    ordered = sorted(source_job_ids)
    for start in range(0, len(ordered), _ROWS_PER_STATEMENT):
        rows = session.execute(
            select(LedgerEntry.job_id, LedgerEntry.naive_cost_usd, LedgerEntry.price_card_id,
                   LedgerEntry.calibration_id, LedgerEntry.baseline_model)
            .where(LedgerEntry.job_id.in_(ordered[start:start + _ROWS_PER_STATEMENT]))
        ).all()
        for job_id, naive, card_id, calibration_id, baseline in rows:
            found[job_id] = SourceCosting(naive, {
                "price_card_id": card_id, "calibration_id": calibration_id,
                "baseline_model": baseline})
    return found


def record_cache_hits(
    session: Session, tenant_id: uuid.UUID, submission_id: uuid.UUID,
    hits: Mapping[uuid.UUID, CachedAnswer],
) -> None:
    """Write each hit job's result and its zero-cost ledger row, and count the hits on
    their entries. The jobs themselves are inserted `succeeded` by the caller, in the same
    transaction. The caller commits."""
    if not hits:
        return
    session.execute(insert(Result), [
        {**answer.result, "job_id": job_id, "batch_id": None} for job_id, answer in hits.items()
    ])
    sources = source_costing(session, {answer.source_job_id for answer in hits.values()})
    session.execute(insert(LedgerEntry), [
        {**cache_hit_ledger(
            model=answer.model, prompt_tokens=answer.result["prompt_tokens"],
            cached_tokens=answer.result["cached_tokens"],
            output_tokens=answer.result["output_tokens"], source_cost_usd=answer.cost_usd,
            source_list_cost_usd=answer.list_cost_usd, source_job_id=answer.source_job_id,
            source_naive_cost_usd=sources[answer.source_job_id].naive_cost_usd
            if answer.source_job_id in sources else None,
            costed_with=sources[answer.source_job_id].costed_with
            if answer.source_job_id in sources else None),
         "job_id": job_id, "tenant_id": tenant_id, "submission_id": submission_id,
         "batch_id": None}
        for job_id, answer in hits.items()
    ])
    counts = Counter((answer.cache_key, answer.entry_id) for answer in hits.values())
    table = ResultCacheEntry.__table__
    assert isinstance(table, Table)
    # In key order, as fills lock entries too: two transactions touching the same entries
    # then never wait on each other in a cycle.
    session.execute(
        update(table).where(table.c.id == bindparam("entry_id"))
        .values(hits=table.c.hits + bindparam("n"), last_hit_at=func.now(),
                last_used_at=func.now()),
        [{"entry_id": entry_id, "n": n} for (_, entry_id), n in sorted(counts.items())],
    )


def fill_result_cache(
    session: Session, policy: CachePolicy, model: str, outcomes: Sequence[JobOutcome]
) -> int:
    """Store the answers of a recording batch's jobs that may fill the cache, in the
    batch's own transaction; return how many entries were written.

    A fill replaces an entry under the same key (a `refresh` job asked for that; an `on`
    job only ran because no live entry existed when it was queued, and its answer is as
    good). Failed jobs have no result and are never stored. The caller commits."""
    identity = policy.identities.get(model)
    if not policy.enabled or identity is None:
        return 0
    rows: dict[tuple[uuid.UUID, str], dict[str, Any]] = {}
    for outcome in outcomes:
        job = outcome.job
        if outcome.result is None or outcome.ledger is None or not policy.writes(
                job.cache_mode):
            continue
        key = policy.key(model, job.request)
        if key is None:
            continue
        rows.setdefault((job.tenant_id, key), {
            "id": uuid.uuid4(), "tenant_id": job.tenant_id, "cache_key": key, "model": model,
            "model_identity": identity, "request": job.request, "source_job_id": job.id,
            **{f: outcome.result.get(f) for f in _RESULT_FIELDS},
            "cost_usd": outcome.ledger["cost_usd"],
            "list_cost_usd": outcome.ledger["list_cost_usd"],
            "expires_at": func.now() + policy.ttl,
        })
    if not rows:
        return 0
    # In (tenant, key) order, as hit counts lock entries in key order (one tenant each);
    # in slices, as a statement carries a limited number of parameters.
    ordered = [rows[k] for k in sorted(rows)]
    for start in range(0, len(ordered), _ROWS_PER_STATEMENT // 20):
        statement = insert(ResultCacheEntry).values(
            ordered[start:start + _ROWS_PER_STATEMENT // 20])
        replaced = {column: statement.excluded[column] for column in (
            "model", "model_identity", "request", "source_job_id", *_RESULT_FIELDS,
            "cost_usd", "list_cost_usd", "expires_at")}
        session.execute(statement.on_conflict_do_update(
            constraint="uq_result_cache_tenant_key",
            set_={**replaced, "created_at": func.now(), "last_used_at": func.now()},
        ))
    return len(rows)


@dataclass(frozen=True)
class CacheSweep:
    expired: int
    evicted: int


def sweep_result_cache(session: Session, max_entries_per_tenant: int) -> CacheSweep:
    """Remove expired entries, then each tenant's least recently used entries beyond the
    maximum. Run periodically by the sweeper, never on a request. The caller commits."""
    expired = len(session.execute(
        delete(ResultCacheEntry).where(ResultCacheEntry.expires_at <= func.now())
        .returning(ResultCacheEntry.id)
    ).all())
    over = session.execute(
        select(ResultCacheEntry.tenant_id).group_by(ResultCacheEntry.tenant_id)
        .having(func.count() > max_entries_per_tenant)
    ).scalars().all()
    evicted = 0
    for tenant_id in over:
        beyond = (select(ResultCacheEntry.id)
                  .where(ResultCacheEntry.tenant_id == tenant_id)
                  .order_by(ResultCacheEntry.last_used_at.desc(), ResultCacheEntry.id.desc())
                  .offset(max_entries_per_tenant))
        evicted += len(session.execute(
            delete(ResultCacheEntry).where(ResultCacheEntry.id.in_(beyond.scalar_subquery()))
            .returning(ResultCacheEntry.id)
        ).all())
    return CacheSweep(expired=expired, evicted=evicted)
