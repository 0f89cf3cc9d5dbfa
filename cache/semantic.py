"""The semantic cache's policy and its choice among candidates. Pure.

A job that opted in (`cache: "semantic"`) and missed the exact cache may be answered with
the answer cached for a close question: same tenant, same model, same context (system
messages, sampling parameters and output constraint, all exactly equal), a cosine
similarity at or above the entry's adaptive threshold (`cache.semantic_threshold`) and no
disagreement found by verification (`cache.semantic_verify`). Only single-question jobs
qualify: one user message (after any system messages), or a plain prompt.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from cache.semantic_threshold import Outcome, entry_threshold
from cache.semantic_verify import QuestionFacts, Rejection, disagreement, read_question


@dataclass(frozen=True)
class SemanticPolicy:
    """The semantic cache as configured (see the `semantic_cache*` settings)."""

    enabled: bool
    threshold: float = 0.85
    false_hit_budget: float = 0.01
    audit_rate: float = 0.02
    candidates: int = 5
    ttl: timedelta = timedelta(days=7)
    embedding_model: str = ""


@dataclass(frozen=True)
class SemanticQuestion:
    """What the semantic cache compares for one job: its question text and the digest of
    everything else that must be exactly equal for an answer to carry over."""

    text: str
    context_key: str


def semantic_question(model: str, request: Mapping[str, Any]) -> SemanticQuestion | None:
    """The job's question, or None when the job is not a single question (a conversation
    with earlier turns, a tool call, non-text content) or is sampled without a seed."""
    sampling = request.get("sampling", {})
    if float(sampling.get("temperature", 0.0)) > 0 and sampling.get("seed") is None:
        return None
    messages = request.get("messages")
    if messages is None:
        prompt = request.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return None
        text, system = prompt, []
    else:
        system = [m for m in messages if m.get("role") == "system"]
        rest = [m for m in messages if m.get("role") != "system"]
        if len(rest) != 1 or rest[0].get("role") != "user":
            return None
        content = rest[0].get("content")
        if not isinstance(content, str) or not content.strip():
            return None
        text = content
    context = {"model": model, "system": system, "sampling": sampling,
               "constraint": request.get("constraint"), "chat": messages is not None}
    digest = hashlib.sha256(json.dumps(context, sort_keys=True, separators=(",", ":"),
                                       ensure_ascii=False).encode()).hexdigest()
    return SemanticQuestion(text=text.strip(), context_key=digest)


@dataclass(frozen=True)
class Candidate:
    """A stored entry near the asked question, as the lookup returns it."""

    entry_id: str
    question: str
    similarity: float
    outcomes: tuple[Outcome, ...] = ()


@dataclass(frozen=True)
class Choice:
    """The served candidate (if any) and why each other one was turned down."""

    hit: Candidate | None
    rejections: tuple[tuple[str, Rejection], ...] = field(default_factory=tuple)


def choose(asked: str, candidates: Sequence[Candidate], base_threshold: float,
           facts: Mapping[str, QuestionFacts] | None = None) -> Choice:
    """The most similar candidate that clears its own threshold and passes verification.
    `facts` may carry already-read facts of the candidates' questions by entry id."""
    asked_facts = read_question(asked)
    rejections: list[tuple[str, Rejection]] = []
    for candidate in sorted(candidates, key=lambda c: -c.similarity):
        if candidate.similarity < entry_threshold(base_threshold, candidate.outcomes):
            rejections.append((candidate.entry_id, Rejection.THRESHOLD))
            continue
        cached = (facts or {}).get(candidate.entry_id) or read_question(candidate.question)
        reason = disagreement(cached, asked_facts)
        if reason is not None:
            rejections.append((candidate.entry_id, reason))
            continue
        return Choice(hit=candidate, rejections=tuple(rejections))
    return Choice(hit=None, rejections=tuple(rejections))
