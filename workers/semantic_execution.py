"""The semantic cache on the worker: before a batch reaches the engine, its jobs that asked
for the semantic cache are embedded (all in one embedder call), looked up in pgvector and
answered from a verified close question where one exists; the rest run on the engine, and
their fresh answers fill the cache in the same transaction that records them.

It runs here, beside the model, and never in the API: the API process never imports
torch. A small fraction of hits is audited (`semantic_cache_audit_rate`): the job runs on
the engine anyway and gets the fresh answer, and whether the cached answer said the same
(their embeddings within AUDIT_AGREEMENT) becomes an outcome of the entry, which its
threshold reads (`cache.semantic_threshold`).

With `semantic_cache_judge`, every candidate that passed verification is also put to the
worker's own model (`cache.semantic_judge`): all of a batch's judge questions go to the
engine in one pass before the batch's own, and a candidate the judge does not confirm is a
miss (rejected as "judge") whose job runs on the engine. The judge's engine seconds are
part of the batch's.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from cache.semantic import SemanticPolicy, SemanticQuestion, choose, semantic_question
from cache.semantic_judge import JUDGE_CHOICES, JUDGE_MAX_TOKENS, judge_agrees, judge_messages
from cache.semantic_threshold import Outcome, base_threshold, should_audit
from ledger.pricing import semantic_hit_ledger
from models.queue import ClaimedBatch, ClaimedJob, JobOutcome
from models.semantic_cache import (
    SemanticAnswer,
    SemanticFill,
    add_counts,
    audited_outcomes,
    count_hits,
    fill_semantic_cache,
    nearest_answers,
    record_outcome,
)
from penny.settings import Settings
from workers.embedder import Embedder, EmbeddingRequest
from workers.engine import Engine, GenerationRequest, Sampling
from workers.execution import BatchExecutor, ExecutedBatch
from workers.guided_decoding import OutputConstraint

log = logging.getLogger(__name__)
SEMANTIC_MODE = "semantic"
# Two answers whose embeddings are at least this close say the same thing, for an audit.
AUDIT_AGREEMENT = 0.9


def semantic_policy(settings: Settings) -> SemanticPolicy:
    return SemanticPolicy(
        enabled=settings.semantic_cache,
        threshold=settings.semantic_cache_threshold,
        false_hit_budget=settings.semantic_cache_false_hit_budget,
        audit_rate=settings.semantic_cache_audit_rate,
        candidates=settings.semantic_cache_candidates,
        ttl=timedelta(seconds=settings.semantic_cache_ttl_seconds),
        embedding_model=(settings.semantic_cache_embedding_model
                         or settings.default_embedding_model),
    )


@dataclass(frozen=True)
class _Hit:
    job: ClaimedJob
    answer: SemanticAnswer
    audited: bool


def _unit(vector: Sequence[float]) -> np.ndarray:
    array = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(array))
    return array / norm if norm else array


class SemanticExecutor:
    """Wraps a generation executor; jobs that did not ask for the semantic cache pass
    straight through. `judge`: the engine that confirms candidates (None: no judge)."""

    def __init__(self, inner: BatchExecutor, embedder: Embedder,
                 sessions: sessionmaker[Session], settings: Settings,
                 judge: Engine | None = None) -> None:
        self.inner, self.embedder, self.sessions = inner, embedder, sessions
        self.policy = semantic_policy(settings)
        self.judge = judge

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    def still_works(self) -> bool:
        return self.inner.still_works()

    def _embed(self, texts: Sequence[str]) -> list[np.ndarray]:
        done = self.embedder.embed([EmbeddingRequest(key=str(i), inputs=(text,))
                                    for i, text in enumerate(texts)])
        return [_unit(e.vectors[0]) if e.ok and e.vectors else np.zeros(0)
                for e in done.embeddings]

    def execute(self, batch: ClaimedBatch) -> ExecutedBatch:
        questions: dict[uuid.UUID, SemanticQuestion] = {}
        if self.policy.enabled:
            for job in batch.jobs:
                if job.cache_mode == SEMANTIC_MODE:
                    question = semantic_question(batch.model, job.request)
                    if question is not None:
                        questions[job.id] = question
        if not questions:
            return self.inner.execute(batch)
        ids = list(questions)
        vectors = dict(zip(ids, self._embed([questions[i].text for i in ids]), strict=True))
        counts: Counter[tuple[uuid.UUID, str]] = Counter()
        hits: dict[uuid.UUID, _Hit] = {}
        with self.sessions() as session:
            # The base each tenant's entries start from: raised while its audited hits say
            # the false-hit rate is over the budget.
            bases = {
                tenant: base_threshold(self.policy.threshold,
                                       audited_outcomes(session, tenant, batch.model),
                                       self.policy.false_hit_budget)
                for tenant in {job.tenant_id for job in batch.jobs if job.id in questions}
            }
            for job in batch.jobs:
                question = questions.get(job.id)
                vector = vectors.get(job.id)
                if question is None or vector is None or not vector.size:
                    continue
                answers = nearest_answers(session, job.tenant_id, batch.model,
                                          question.context_key, vector.tolist(),
                                          self.policy.candidates)
                by_id = {a.candidate.entry_id: a for a in answers}
                choice = choose(question.text, [a.candidate for a in answers],
                                bases[job.tenant_id])
                for _, reason in choice.rejections:
                    counts[(job.tenant_id, f"rejected:{reason.value}")] += 1
                if choice.hit is None:
                    counts[(job.tenant_id, "misses")] += 1
                    continue
                audited = should_audit(str(job.id), self.policy.audit_rate)
                hits[job.id] = _Hit(job, by_id[choice.hit.entry_id], audited)
                counts[(job.tenant_id, "audits" if audited else "hits")] += 1
            session.rollback()  # lookups only; SET LOCAL ends with the transaction
        judge_seconds = 0.0
        if self.judge is not None and hits:
            refused, judge_seconds = self._judged(hits, questions)
            for job_id in refused:
                hit = hits.pop(job_id)
                counts[(hit.job.tenant_id, "audits" if hit.audited else "hits")] -= 1
                counts[(hit.job.tenant_id, "rejected:judge")] += 1
                counts[(hit.job.tenant_id, "misses")] += 1
        to_run = [job for job in batch.jobs if job.id not in hits or hits[job.id].audited]
        ran = (self.inner.execute(dataclasses.replace(batch, jobs=to_run)) if to_run
               else ExecutedBatch([], 0.0))
        ran = dataclasses.replace(ran, engine_seconds=ran.engine_seconds + judge_seconds)
        fresh = {o.job.id: o for o in ran.outcomes}
        outcomes = [fresh[job.id] if job.id in fresh else self._served(batch, hits[job.id])
                    for job in batch.jobs]
        fills = [self._fill(batch, o, questions[o.job.id], vectors[o.job.id])
                 for o in ran.outcomes
                 if o.result is not None and o.ledger is not None and o.job.id in questions
                 and o.job.id not in hits and vectors[o.job.id].size]
        audits = [(hits[o.job.id], o) for o in ran.outcomes
                  if o.job.id in hits and o.result is not None]
        verdicts = self._audit(audits)

        def bookkeeping(session: Session) -> None:
            fill_semantic_cache(session, fills, self.policy.ttl)
            count_hits(session, [h.answer.candidate.entry_id for h in hits.values()
                                 if not h.audited])
            for entry_id, outcome in verdicts:
                record_outcome(session, entry_id, outcome)
            mismatches = Counter(tenant for tenant, wrong in
                                 ((h.job.tenant_id, not o.correct)
                                  for (h, _), (_, o) in zip(audits, verdicts, strict=True))
                                 if wrong)
            for (tenant, name), n in _by_tenant(counts, mismatches).items():
                add_counts(session, tenant, {name: n})

        return ExecutedBatch(outcomes, ran.engine_seconds, record_with=bookkeeping)

    def _judged(self, hits: dict[uuid.UUID, _Hit], questions: dict[uuid.UUID, SemanticQuestion]
                ) -> tuple[list[uuid.UUID], float]:
        """The jobs whose candidate the judge did not confirm, and the engine seconds the
        judging took (one engine pass for the whole batch)."""
        assert self.judge is not None
        sampling = Sampling(max_tokens=JUDGE_MAX_TOKENS)
        requests = [
            GenerationRequest(
                key=str(job_id), sampling=sampling,
                messages=judge_messages(hit.answer.candidate.question,
                                        questions[job_id].text),
                cache_salt=str(hit.job.tenant_id),
                constraint=OutputConstraint(choice=JUDGE_CHOICES))
            for job_id, hit in hits.items()]
        done = self.judge.generate(requests)
        confirmed = {uuid.UUID(g.key) for g in done.generations if g.ok and judge_agrees(g.text)}
        return [job_id for job_id in hits if job_id not in confirmed], done.engine_seconds

    def _served(self, batch: ClaimedBatch, hit: _Hit) -> JobOutcome:
        answer = hit.answer
        result = dict(answer.result)
        ledger = semantic_hit_ledger(
            model=batch.model, prompt_tokens=result["prompt_tokens"],
            cached_tokens=result["cached_tokens"], output_tokens=result["output_tokens"],
            source_cost_usd=answer.cost_usd, source_list_cost_usd=answer.list_cost_usd,
            source_job_id=answer.source_job_id,
            entry_id=uuid.UUID(answer.candidate.entry_id),
            similarity=round(answer.candidate.similarity, 6))
        return JobOutcome(hit.job, result, ledger, None)

    def _fill(self, batch: ClaimedBatch, outcome: JobOutcome, question: SemanticQuestion,
              vector: np.ndarray) -> SemanticFill:
        assert outcome.result is not None and outcome.ledger is not None
        return SemanticFill(
            tenant_id=outcome.job.tenant_id, model=batch.model,
            context_key=question.context_key, embedding_model=self.policy.embedding_model,
            question=question.text, vector=vector.tolist(), source_job_id=outcome.job.id,
            result=outcome.result, cost_usd=outcome.ledger["cost_usd"],
            list_cost_usd=outcome.ledger["list_cost_usd"])

    def _audit(self, audits: Sequence[tuple[_Hit, JobOutcome]]) -> list[tuple[str, Outcome]]:
        """Whether each audited cached answer says what the fresh one says."""
        if not audits:
            return []
        texts = [t for hit, fresh in audits
                 for t in (str(hit.answer.result["text"]), str((fresh.result or {})["text"]))]
        embedded = self._embed(texts)
        verdicts = []
        for index, (hit, _) in enumerate(audits):
            cached, fresh = embedded[2 * index], embedded[2 * index + 1]
            agree = bool(cached.size and fresh.size
                         and float(cached @ fresh) >= AUDIT_AGREEMENT)
            verdicts.append((hit.answer.candidate.entry_id,
                             Outcome(hit.answer.candidate.similarity, agree)))
        return verdicts


def _by_tenant(counts: Counter[tuple[uuid.UUID, str]],
               mismatches: Counter[uuid.UUID]) -> dict[tuple[uuid.UUID, str], int]:
    merged = dict(+counts)  # a hit the judge turned down leaves a zero
    for tenant, n in mismatches.items():
        merged[(tenant, "audit_mismatches")] = n
    return merged
