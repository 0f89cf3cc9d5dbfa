"""`model: "auto"`: the cheapest tier expected to answer well enough, from cheap features.

Tiers are ordered cheapest first. The router sorts a request into one of three difficulty
levels and maps the levels onto however many tiers are declared: with two tiers, easy
work goes to the small one and everything else to the large one; with three, medium work
gets the middle one. An explicitly named model never comes here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from routing.features import RequestFeatures

AUTO_MODEL = "auto"
CASCADE_MODEL = "cascade"
ROUTED_MODELS = (AUTO_MODEL, CASCADE_MODEL)

# A prompt this long carries context the model must read closely (a document, a thread).
LONG_PROMPT_CHARS = 1500
# Asking for this many tokens means writing, not answering.
LONG_OUTPUT_TOKENS = 256
# A lookup question fits in this much text.
SHORT_PROMPT_CHARS = 300


class Difficulty(IntEnum):
    EASY = 0
    MEDIUM = 1
    HARD = 2


@dataclass(frozen=True)
class Assessment:
    difficulty: Difficulty
    reason: str


@dataclass(frozen=True)
class RouteDecision:
    model: str
    tier: int  # 0-based position in the tiers, cheapest first
    reason: str


def assess(features: RequestFeatures) -> Assessment:
    """The difficulty level and the first feature that decided it, in words."""
    if features.code_markers:
        return Assessment(Difficulty.HARD, "code markers")
    if features.math_operations >= 2 or (features.math_operations and features.math_words):
        return Assessment(Difficulty.HARD, "several arithmetic steps")
    if features.prompt_chars > LONG_PROMPT_CHARS:
        return Assessment(Difficulty.HARD, f"long prompt ({features.prompt_chars} chars)")
    if features.max_tokens > LONG_OUTPUT_TOKENS:
        return Assessment(Difficulty.MEDIUM, f"long output requested ({features.max_tokens} "
                                             "tokens)")
    if features.reasoning_words:
        return Assessment(Difficulty.MEDIUM, "task words ask for reasoning or writing")
    if features.math_words or features.math_operations:
        return Assessment(Difficulty.MEDIUM, "math markers")
    if features.constrained_output and features.prompt_chars > SHORT_PROMPT_CHARS:
        return Assessment(Difficulty.MEDIUM, "structured output from a longer prompt")
    if features.lookup_words:
        # Under LONG_PROMPT_CHARS: a question, or a fact to pick out of a short text.
        return Assessment(Difficulty.EASY, "lookup question")
    if features.prompt_chars <= SHORT_PROMPT_CHARS:
        return Assessment(Difficulty.EASY, "short prompt, no hard markers")
    return Assessment(Difficulty.MEDIUM, "no easy markers")


def tier_for(difficulty: Difficulty, tier_count: int) -> int:
    """Spread the three levels over the tiers: the easiest level always gets the cheapest
    tier and the hardest the largest; the middle rounds up (to the safer side)."""
    if tier_count < 1:
        raise ValueError("at least one tier is needed")
    return math.ceil(difficulty * (tier_count - 1) / Difficulty.HARD)


def route(features: RequestFeatures, tiers: Sequence[str]) -> RouteDecision:
    assessment = assess(features)
    index = tier_for(assessment.difficulty, len(tiers))
    return RouteDecision(
        model=tiers[index], tier=index,
        reason=f"{assessment.difficulty.name.lower()}: {assessment.reason}")


def route_label(route: dict[str, Any] | None) -> str | None:
    """A job route's short form, as its ledger row carries it: "auto: easy: lookup
    question", "cascade: kept on the first tier", ... None for a job that named its model."""
    if route is None:
        return None
    return f"{route['mode']}: {route['reason']}"[:200]
