"""The semantic cache in the database: nearest-neighbour lookups in pgvector (scoped by
tenant, model and context), filling entries, counting hits, outcomes and rejections.

The `semantic_cache` table exists only where the pgvector extension does (see migration
0014), so it is queried in SQL here rather than mapped. Choosing among candidates is
`cache.semantic`; listing, correcting and purging is `models.semantic_cache_admin`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from cache.semantic import Candidate
from cache.semantic_threshold import Outcome
from models.tables import SemanticCacheCounter

# Candidates the HNSW index keeps per step (pgvector's default). Filtering by tenant and
# scope happens after the index scan; the iterative scan goes on until enough rows pass.
EF_SEARCH = 40
# The answer fields an entry keeps and a hit gets back as its result row.
ANSWER_FIELDS = ("text", "finish_reason", "prompt_tokens", "cached_tokens", "output_tokens",
                 "mean_logprob")
_RETURNED = (f"id, question, outcomes, source_job_id, cost_usd, list_cost_usd, "
             f"{', '.join(ANSWER_FIELDS)}")
_SCOPE = ("tenant_id = :tenant AND model = :model AND context_key = :context "
          "AND expires_at > now()")

# The worker's lookup: the scope filters run on the rows the HNSW scan yields. For a small
# scope the planner, from the table's statistics, reads the scope's own rows through its
# B-tree index instead (measured: 0.2 ms for 200 entries among 100,000).
NEAREST_SQL = f"""
    SELECT {_RETURNED}, 1 - (embedding <=> CAST(:vector AS vector)) AS similarity
    FROM semantic_cache
    WHERE {_SCOPE}
    ORDER BY embedding <=> CAST(:vector AS vector)
    LIMIT :limit"""


def semantic_table_present(session: Session) -> bool:
    """Whether this database has the vector table (it has pgvector and was migrated)."""
    present = session.execute(text("SELECT to_regclass('semantic_cache') IS NOT NULL"))
    return bool(present.scalar_one())


def vector_literal(vector: Sequence[float]) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector) + "]"


@dataclass(frozen=True)
class SemanticAnswer:
    """A candidate entry with the answer it would serve."""

    candidate: Candidate
    source_job_id: uuid.UUID
    result: dict[str, Any]
    cost_usd: Decimal
    list_cost_usd: Decimal


def _outcomes(raw: Any) -> tuple[Outcome, ...]:
    return tuple(Outcome(float(s), bool(c)) for s, c in (raw or []))


def nearest_answers(
    session: Session, tenant_id: uuid.UUID, model: str, context_key: str,
    vector: Sequence[float], limit: int,
) -> list[SemanticAnswer]:
    """The live entries of one tenant, model and context nearest to `vector`, closest
    first, with their cosine similarity. pgvector's iterative index scan keeps going past
    rows the scope filters out, so another tenant's entries never crowd out this one's
    (in relaxed order, which is much cheaper than strict; sorted here instead)."""
    session.execute(text(f"SET LOCAL hnsw.ef_search = {EF_SEARCH}; "
                         "SET LOCAL hnsw.iterative_scan = relaxed_order"))
    rows = session.execute(text(NEAREST_SQL), {
        "vector": vector_literal(vector), "tenant": tenant_id, "model": model,
        "context": context_key, "limit": limit}).mappings().all()
    answers = [
        SemanticAnswer(
            candidate=Candidate(entry_id=str(row["id"]), question=row["question"],
                                similarity=float(row["similarity"]),
                                outcomes=_outcomes(row["outcomes"])),
            source_job_id=row["source_job_id"],
            result={f: row[f] for f in ANSWER_FIELDS},
            cost_usd=row["cost_usd"], list_cost_usd=row["list_cost_usd"],
        )
        for row in rows
    ]
    return sorted(answers, key=lambda a: -a.candidate.similarity)


@dataclass(frozen=True)
class SemanticFill:
    """A fresh answer to store under its question's vector."""

    tenant_id: uuid.UUID
    model: str
    context_key: str
    embedding_model: str
    question: str
    vector: Sequence[float]
    source_job_id: uuid.UUID
    result: Mapping[str, Any]
    cost_usd: Decimal
    list_cost_usd: Decimal


def fill_semantic_cache(session: Session, fills: Sequence[SemanticFill], ttl: timedelta) -> int:
    """Store the fresh answers; the caller commits."""
    if not fills:
        return 0
    session.execute(text(f"""
        INSERT INTO semantic_cache (id, tenant_id, model, context_key, embedding_model,
            question, embedding, source_job_id, cost_usd, list_cost_usd, expires_at,
            {", ".join(ANSWER_FIELDS)})
        VALUES (:id, :tenant_id, :model, :context_key, :embedding_model, :question,
            CAST(:vector AS vector), :source_job_id, :cost_usd, :list_cost_usd,
            now() + make_interval(secs => :ttl), {", ".join(":" + f for f in ANSWER_FIELDS)})
    """), [
        {"id": uuid.uuid4(), "tenant_id": fill.tenant_id, "model": fill.model,
         "context_key": fill.context_key, "embedding_model": fill.embedding_model,
         "question": fill.question, "vector": vector_literal(fill.vector),
         "source_job_id": fill.source_job_id, "cost_usd": fill.cost_usd,
         "list_cost_usd": fill.list_cost_usd, "ttl": ttl.total_seconds(),
         **{f: fill.result.get(f) for f in ANSWER_FIELDS}}
        for fill in fills
    ])
    return len(fills)


def count_hits(session: Session, entry_ids: Sequence[str]) -> None:
    """Count served hits on their entries (ids in a stable order, so two transactions never
    wait on each other in a cycle); the caller commits."""
    for entry_id in sorted(entry_ids):
        session.execute(text("UPDATE semantic_cache SET hits = hits + 1, last_hit_at = now() "
                             "WHERE id = :id"), {"id": entry_id})


def record_outcome(session: Session, entry_id: str, outcome: Outcome) -> None:
    """Append an observed outcome to an entry: its threshold reads them (see
    cache.semantic_threshold). The caller commits."""
    session.execute(text(
        "UPDATE semantic_cache SET outcomes = outcomes || CAST(:pair AS jsonb) WHERE id = :id"),
        {"id": entry_id, "pair": json.dumps([[round(outcome.similarity, 6), outcome.correct]])})


def audited_outcomes(session: Session, tenant_id: uuid.UUID, model: str,
                     limit: int = 10_000) -> list[Outcome]:
    """The tenant's most recent observed outcomes on this model, across its entries: what
    the base threshold is judged on against the false-hit budget."""
    rows = session.execute(text("""
        SELECT o.value FROM semantic_cache,
             LATERAL jsonb_array_elements(outcomes) WITH ORDINALITY AS o(value, n)
        WHERE tenant_id = :tenant AND model = :model AND outcomes <> '[]'::jsonb
        ORDER BY created_at DESC, o.n DESC LIMIT :limit"""),
        {"tenant": tenant_id, "model": model, "limit": limit}).scalars().all()
    return [Outcome(float(s), bool(c)) for s, c in rows]


def add_counts(session: Session, tenant_id: uuid.UUID, counts: Mapping[str, int]) -> None:
    """Add to a tenant's semantic-cache tallies; the caller commits."""
    rows = [{"tenant_id": tenant_id, "name": name, "count": n}
            for name, n in sorted(counts.items()) if n]
    if not rows:
        return
    statement = insert(SemanticCacheCounter).values(rows)
    session.execute(statement.on_conflict_do_update(
        index_elements=["tenant_id", "name"],
        set_={"count": SemanticCacheCounter.count + statement.excluded["count"]}))


def read_counts(session: Session, tenant_id: uuid.UUID) -> dict[str, int]:
    rows = session.execute(text(
        "SELECT name, count FROM semantic_cache_counters WHERE tenant_id = :t"),
        {"t": tenant_id}).all()
    return {name: int(count) for name, count in rows}


def sweep_semantic_cache(session: Session) -> int:
    """Remove expired entries; run periodically, never on a request. The caller commits."""
    if not semantic_table_present(session):
        return 0
    return len(session.execute(text(
        "DELETE FROM semantic_cache WHERE expires_at <= now() RETURNING id")).all())
