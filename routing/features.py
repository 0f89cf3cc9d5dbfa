"""Cheap features of a request that hint at how much model it needs.

Only what can be read from the request itself in microseconds: its length, words that
name the task, code and math markers, and how much output it asks for. No tokenizer, no
embedding: the router runs at intake, on every job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Words that ask for reasoning, writing or analysis rather than a looked-up fact.
_REASONING_WORDS = re.compile(
    r"\b(explain|why|prove|derive|step[- ]by[- ]step|reason|analy[sz]e|compare|contrast|"
    r"evaluate|justify|argue|design|plan|summari[sz]e|translate|rewrite|essay|story|poem|"
    r"critique|debug|refactor|optimi[sz]e)\b",
    re.IGNORECASE)
_CODE_MARKERS = re.compile(
    r"```|\bdef |\bclass |\bfunction\b|\breturn\b|\bimport |\bSELECT\b|\bpython\b|"
    r"\bjavascript\b|\bregex\b|\bcode\b|[{};]\s*$|=>",
    re.IGNORECASE | re.MULTILINE)
# Arithmetic operators between numbers ("12 * 7", "3+4"); each is one step of work.
_OPERATION = re.compile(r"\d\s*[-+*/x\u00d7\u00f7^]\s*\(?\d")
_MATH_WORDS = re.compile(
    r"\b(integral|derivative|equation|solve|probability|percent(age)?|average|sum of|"
    r"product of|remainder|prime|factor|square root|how many .* (left|remain|total))\b",
    re.IGNORECASE)
# Short look-up tasks a small model answers as well as a big one.
_LOOKUP_WORDS = re.compile(
    r"\b(capital of|what is|who is|who wrote|yes or no|true or false|convert|how many|"
    r"extract|which|name the|spell|define)\b",
    re.IGNORECASE)


@dataclass(frozen=True)
class RequestFeatures:
    prompt_chars: int
    max_tokens: int
    reasoning_words: int
    code_markers: int
    math_operations: int
    math_words: int
    lookup_words: int
    constrained_output: bool  # a JSON schema, regex or choice shapes the answer


def features_of(prompt_text: str, max_tokens: int, *, constrained_output: bool = False
                ) -> RequestFeatures:
    """`prompt_text` is everything the model reads: every message's content, joined."""
    return RequestFeatures(
        prompt_chars=len(prompt_text),
        max_tokens=max_tokens,
        reasoning_words=len(_REASONING_WORDS.findall(prompt_text)),
        code_markers=len(_CODE_MARKERS.findall(prompt_text)),
        math_operations=len(_OPERATION.findall(prompt_text)),
        math_words=len(_MATH_WORDS.findall(prompt_text)),
        lookup_words=len(_LOOKUP_WORDS.findall(prompt_text)),
        constrained_output=constrained_output,
    )
