"""Extractive prompt compression. Pure: the sentence vectors come from a function the
caller passes in (the worker's embedder).

A prompt's long context is split into sentences and the most useful are kept, in their
original order, until the kept text reaches the requested share of the context. Useful
means close to the question (cosine of sentence embeddings), blended with how central a
sentence is to the whole context; with no question, centrality alone. Nothing is
rewritten, so every fact in the compressed prompt is one the client wrote.

What is never touched: system messages, assistant messages, and the question itself —
the last paragraph of the last user message (or of a plain prompt), and a first line
that introduces the context (ending with ':'). Everything else a user wrote is context.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Sentence ends: after . ! ? followed by space, or at a line break. The separators are
# kept so the kept sentences are joined the way they were written.
_SPLIT = re.compile(r"((?<=[.!?])[ \t]+|[ \t]*\n\s*)")
# How much of a sentence's score is closeness to the question (the rest is centrality).
RELEVANCE_WEIGHT = 0.7

Embed = Callable[[Sequence[str]], Sequence[np.ndarray]]


@dataclass(frozen=True)
class CompressionSpec:
    """What a job asked for: keep about `ratio` of its context (by characters, a proxy for
    tokens), and leave contexts shorter than `min_context_chars` as they are."""

    ratio: float
    min_context_chars: int

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> CompressionSpec:
        return cls(ratio=float(stored["ratio"]),
                   min_context_chars=int(stored["min_context_chars"]))


@dataclass(frozen=True)
class _Part:
    """A piece of text: context to compress, or text kept as written."""

    text: str
    context: bool


def sentences(text: str) -> tuple[list[str], list[str]]:
    """The sentences of `text` and the separators after each (the last one's is "")."""
    pieces = _SPLIT.split(text)
    found, separators = [], []
    for index in range(0, len(pieces), 2):
        sentence = pieces[index]
        separator = pieces[index + 1] if index + 1 < len(pieces) else ""
        if sentence.strip():
            found.append(sentence)
            separators.append(separator)
        elif separators:
            separators[-1] += sentence + separator
    return found, separators


def _join(kept: Sequence[int], found: Sequence[str], separators: Sequence[str]) -> str:
    out = []
    for position, index in enumerate(kept):
        out.append(found[index])
        if position + 1 < len(kept):
            between = "".join(separators[index:kept[position + 1]])
            out.append("\n" if "\n" in between else " ")
    return "".join(out)


def split_question(text: str) -> tuple[str, str, str]:
    """(introduction, context, question) of one user text. The question is the last
    paragraph when there is more than one; the introduction a first line ending in ':'."""
    head, context, question = "", text, ""
    body = text.rstrip()
    cut = body.rfind("\n")
    if cut > 0 and body[cut + 1:].strip():
        context, question = text[:cut + 1], text[cut + 1:]
    first = context.find("\n")
    if first > 0 and context[:first].rstrip().endswith(":"):
        head, context = context[:first + 1], context[first + 1:]
    return head, context, question


# A question asking for several things ("who leads it, where it is based, its budget")
# is split into its parts: a sentence answering any one part is relevant, however little
# it resembles the question as a whole.
_QUESTION_PARTS = re.compile(r"[.;:?!]\s*|,\s*|\s+and\s+")


def question_parts(question: str) -> list[str]:
    """The question and each clause of it worth matching on its own (2+ words)."""
    parts = [p.strip() for p in _QUESTION_PARTS.split(question)]
    return [question, *(p for p in parts if len(p.split()) >= 2 and p != question)]


def choose_sentences(vectors: np.ndarray, question: np.ndarray | None,
                     lengths: Sequence[int], budget: int) -> list[int]:
    """Indices (ascending) of the sentences to keep: best score first while they fit in
    `budget` characters; always at least the best one. Vectors are unit length;
    `question` is one vector or a matrix of a question's parts (a sentence scores its best
    match among them)."""
    centroid = vectors.mean(axis=0)
    norm = float(np.linalg.norm(centroid))
    centrality = vectors @ (centroid / norm) if norm else np.zeros(len(vectors))
    if question is not None and question.size:
        relevance = (vectors @ np.atleast_2d(question).T).max(axis=1)
        scores = RELEVANCE_WEIGHT * relevance + (1 - RELEVANCE_WEIGHT) * centrality
    else:
        scores = centrality
    kept: list[int] = []
    used = 0
    for index in sorted(range(len(lengths)), key=lambda i: (-float(scores[i]), i)):
        if not kept or used + lengths[index] <= budget:
            kept.append(index)
            used += lengths[index]
    return sorted(kept)


@dataclass(frozen=True)
class Compressed:
    request: dict[str, Any]  # the stored request with its context cut down
    context_chars: int
    kept_chars: int

    @property
    def changed(self) -> bool:
        return self.kept_chars < self.context_chars


def _parts(request: dict[str, Any]) -> tuple[list[list[_Part]], str]:
    """Each message's (or the prompt's) parts, and the question text ("" if none)."""
    texts: list[tuple[str, bool]]
    if request.get("messages") is not None:
        texts = [(m["content"], m["role"] == "user") for m in request["messages"]]
    else:
        texts = [(str(request.get("prompt") or ""), True)]
    last_user = max((i for i, (_, user) in enumerate(texts) if user), default=-1)
    parts: list[list[_Part]] = []
    question = ""
    for index, (text, user) in enumerate(texts):
        if not user:
            parts.append([_Part(text, False)])
        elif index == last_user:
            head, context, question = split_question(text)
            parts.append([_Part(head, False), _Part(context, True), _Part(question, False)])
        else:
            parts.append([_Part(text, True)])
    return parts, question.strip()


def compress_request(request: dict[str, Any], spec: CompressionSpec, embed: Embed
                     ) -> Compressed:
    """The request with its context compressed to about `spec.ratio`, or as it was when
    its context is shorter than `spec.min_context_chars` or has one sentence."""
    parts, question = _parts(request)
    split = [sentences(p.text) if p.context else ([], []) for message in parts
             for p in message]
    found = [s for sentence_list, _ in split for s in sentence_list]
    context_chars = sum(len(s) for s in found)
    if context_chars < spec.min_context_chars or len(found) < 2:
        return Compressed(request, context_chars, context_chars)
    asked = question_parts(question) if question else []
    vectors = embed([*found, *asked])
    matrix = np.stack([np.asarray(v, dtype=np.float32) for v in vectors[:len(found)]])
    question_vector = (np.stack([np.asarray(v, dtype=np.float32)
                                 for v in vectors[len(found):]]) if asked else None)
    lengths = [len(s) for s in found]
    kept = set(choose_sentences(matrix, question_vector, lengths,
                                int(context_chars * spec.ratio)))
    texts, offset, flat = [], 0, iter(split)
    for message in parts:
        written = []
        for part in message:
            sentence_list, separators = next(flat)
            if not part.context:
                written.append(part.text)
                continue
            mine = [i for i in range(len(sentence_list)) if offset + i in kept]
            text = _join(mine, sentence_list, separators)
            trailing = part.text[len(part.text.rstrip()):]
            written.append(text + trailing if text else "")
            offset += len(sentence_list)
        texts.append("".join(written))
    compressed = dict(request)
    if request.get("messages") is not None:
        compressed["messages"] = [{**m, "content": t}
                                  for m, t in zip(request["messages"], texts, strict=True)]
    else:
        compressed["prompt"] = texts[0]
    return Compressed(compressed, context_chars, sum(lengths[i] for i in kept))
