"""The semantic cache's store on Postgres with pgvector: lookups are scoped by tenant,
model and context, nearest first; outcomes and counters accumulate; expired entries are
never served and the sweeper removes them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text

from cache.semantic_threshold import Outcome
from models.semantic_cache import (
    SemanticFill,
    add_counts,
    audited_outcomes,
    fill_semantic_cache,
    nearest_answers,
    read_counts,
    record_outcome,
)
from models.tables import Tenant
from penny.runtime import Runtime, open_runtime
from tests.support import make_settings, reset_tables
from workers.sweeper import sweep_result_cache_entries


@pytest.fixture
def runtime(tmp_path: Path, pgvector_database_url: str) -> Iterator[Runtime]:
    runtime = open_runtime(make_settings(tmp_path, pgvector_database_url, semantic_cache=True))
    reset_tables(runtime)
    yield runtime
    runtime.close()


def unit(*head: float) -> list[float]:
    vector = [*head, *([0.0] * (384 - len(head)))]
    norm = sum(x * x for x in vector) ** 0.5
    return [x / norm for x in vector]


def tenants(runtime: Runtime, *names: str) -> list[uuid.UUID]:
    with runtime.sessions() as session:
        made = [Tenant(name=name) for name in names]
        session.add_all(made)
        session.commit()
        return [t.id for t in made]


def fill(tenant: uuid.UUID, question: str, vector: list[float], *, model: str = "m",
         context: str = "c") -> SemanticFill:
    return SemanticFill(
        tenant_id=tenant, model=model, context_key=context, embedding_model="e",
        question=question, vector=vector, source_job_id=uuid.uuid4(),
        result={"text": f"answer to {question}", "finish_reason": "stop",
                "prompt_tokens": 5, "cached_tokens": 0, "output_tokens": 3,
                "mean_logprob": None},
        cost_usd=Decimal("0.001"), list_cost_usd=Decimal("0.002"))


def test_lookups_are_scoped_and_nearest_first(runtime: Runtime) -> None:
    a, b, c = tenants(runtime, "a", "b", "c")
    with runtime.sessions() as session:
        fill_semantic_cache(session, [
            fill(a, "near", unit(1, 0.1)), fill(a, "far", unit(1, 1)),
            fill(a, "other model", unit(1, 0.1), model="n"),
            fill(a, "other context", unit(1, 0.1), context="d"),
            fill(b, "b's own", unit(1, 0.05)),
        ], timedelta(days=1))
        session.commit()
    with runtime.sessions() as session:
        found = nearest_answers(session, a, "m", "c", unit(1, 0), 5)
        assert [f.candidate.question for f in found] == ["near", "far"]
        assert found[0].candidate.similarity == pytest.approx(0.995, abs=1e-3)
        assert found[0].result["text"] == "answer to near"
        assert [f.candidate.question for f in nearest_answers(session, b, "m", "c",
                                                              unit(1, 0), 5)] == ["b's own"]
        assert nearest_answers(session, c, "m", "c", unit(1, 0), 5) == []


def test_outcomes_and_counters_accumulate(runtime: Runtime) -> None:
    [a] = tenants(runtime, "a")
    with runtime.sessions() as session:
        fill_semantic_cache(session, [fill(a, "q", unit(1))], timedelta(days=1))
        [entry] = nearest_answers(session, a, "m", "c", unit(1), 1)
        record_outcome(session, entry.candidate.entry_id, Outcome(0.9, True))
        record_outcome(session, entry.candidate.entry_id, Outcome(0.85, False))
        add_counts(session, a, {"hits": 2, "rejected:negation": 1})
        add_counts(session, a, {"hits": 1})
        session.commit()
    with runtime.sessions() as session:
        [again] = nearest_answers(session, a, "m", "c", unit(1), 1)
        assert again.candidate.outcomes == (Outcome(0.9, True), Outcome(0.85, False))
        assert sorted(audited_outcomes(session, a, "m"), key=lambda o: o.similarity) == [
            Outcome(0.85, False), Outcome(0.9, True)]
        assert read_counts(session, a) == {"hits": 3, "rejected:negation": 1}


def test_expired_entries_are_never_served_and_are_swept(runtime: Runtime) -> None:
    [a] = tenants(runtime, "a")
    with runtime.sessions() as session:
        fill_semantic_cache(session, [fill(a, "old", unit(1))], timedelta(seconds=1))
        fill_semantic_cache(session, [fill(a, "new", unit(1, 0.2))], timedelta(days=1))
        session.execute(text("UPDATE semantic_cache SET expires_at = now() - interval '1 s' "
                             "WHERE question = 'old'"))
        session.commit()
        assert [f.candidate.question for f in nearest_answers(session, a, "m", "c",
                                                              unit(1), 5)] == ["new"]
        session.rollback()
    sweep_result_cache_entries(runtime.settings, runtime.sessions)
    with runtime.sessions() as session:
        left = session.execute(text("SELECT question FROM semantic_cache")).scalars().all()
    assert left == ["new"]
