"""cache.semantic_verify, cache.semantic_threshold and cache.semantic: which close
questions may share an answer, and how thresholds move with observed outcomes."""

from __future__ import annotations

import pytest

from cache.keys import CacheMode, CachePolicy, parse_cache_mode
from cache.semantic import Candidate, choose, semantic_question
from cache.semantic_threshold import (
    MIN_AUDITED,
    Outcome,
    base_threshold,
    entry_threshold,
    false_hit_upper_bound,
    should_audit,
)
from cache.semantic_verify import Rejection, detect_language, read_question, verify

SERVED = [
    ("Is Paris the capital of France?", "Is Paris France's capital?"),
    ("How do I cancel my subscription?", "How can I cancel my subscription?"),
    ("Does the laptop come with a 2 year warranty?",
     "Does the laptop include a two year warranty?"),
    ("Is Spanish easier to learn than French?", "Is learning Spanish easier than learning French?"),
    ("Is gold heavier than lead?", "Is gold denser than lead?"),
    # A word for a form of itself is no changed action.
    ("Who discovered penicillin?", "Who was the discoverer of penicillin?"),
    ("When did the Titanic sink?", "When was the sinking of the Titanic?"),
    ("How many miles is a marathon?", "How long is a marathon in miles?"),
]

REFUSED = [
    ("Is Paris the capital of France?", "Is Paris not the capital of France?", "negation"),
    ("How do I cancel my subscription?", "Why can't I cancel my subscription?", "negation"),
    ("Can I take 400 mg of ibuprofen every 6 hours?",
     "Can I take 800 mg of ibuprofen every 6 hours?", "numbers"),
    ("Who was the first president of the United States?",
     "Who was the third president of the United States?", "numbers"),
    ("How many miles is a marathon?", "How many kilometers is a marathon?", "units"),
    ("What is the refund policy for orders over $50?",
     "What is the refund policy for orders over €50?", "units"),
    ("Is the Pacific Ocean larger than the Atlantic Ocean?",
     "Is the Pacific Ocean smaller than the Atlantic Ocean?", "comparison"),
    ("Is the iPhone 15 more expensive than the iPhone 14?",
     "Is the iPhone 15 cheaper than the iPhone 14?", "comparison"),
    ("What is the minimum age to rent a car in Germany?",
     "What is the maximum age to rent a car in Germany?", "comparison"),
    ("Is London older than Paris?", "Is Paris older than London?", "entities"),
    ("Is gold heavier than lead?", "Is lead heavier than gold?", "entities"),
    ("How do I convert Celsius to Fahrenheit?", "How do I convert Fahrenheit to Celsius?",
     "entities"),
    ("Can dogs eat grapes?", "Can cats eat grapes?", "entities"),
    ("What is the population of Tokyo?", "What is the population of Kyoto?", "entities"),
    ("Can I pay with PayPal?", "¿Puedo pagar con PayPal?", "language"),
    # The verb changed and took its auxiliary with it: no single token swap, one action.
    ("When did the Titanic sink?", "When was the Titanic built?", "action"),
    ("How did the company fail?", "How was the company founded?", "action"),
    ("Can I pay with PayPal?", "Kann ich mit PayPal bezahlen?", "language"),
    ("How do I convert Celsius to Fahrenheit?",
     "Come si convertono i gradi Celsius in Fahrenheit?", "language"),
]


@pytest.mark.parametrize(("cached", "asked"), SERVED)
def test_paraphrases_pass_verification(cached: str, asked: str) -> None:
    assert verify(cached, asked) is None


@pytest.mark.parametrize(("cached", "asked", "reason"), REFUSED)
def test_near_misses_are_refused_with_their_reason(cached: str, asked: str, reason: str) -> None:
    assert verify(cached, asked) == Rejection(reason)
    # Whichever of the two was cached first.
    assert verify(asked, cached) is not None


def test_facts_read_numbers_units_and_names() -> None:
    facts = read_question("Is 0.5 mg of Melatonin enough for 2 nights in New York?")
    assert facts.numbers == {"0.5", "2"}
    assert facts.units == {"mg"}
    assert facts.entities == ("melatonin", "new", "york")
    assert facts.negations == 0


def test_language_detection() -> None:
    assert detect_language(["is", "paris", "the", "capital"]) == "en"
    assert detect_language(["quel", "est", "le", "symbole"]) == "fr"
    assert detect_language(["東京"]) == "cjk"
    assert detect_language(["paypal"]) == "und"


def test_entry_threshold_rises_above_a_wrong_answer_and_only_rises() -> None:
    assert entry_threshold(0.85, []) == 0.85
    assert entry_threshold(0.85, [Outcome(0.9, True)]) == 0.85
    assert entry_threshold(0.85, [Outcome(0.9, False)]) == pytest.approx(0.91)
    # A wrong answer below the base says nothing new.
    assert entry_threshold(0.85, [Outcome(0.7, False)]) == 0.85


def test_base_threshold_stands_without_evidence_and_rises_over_budget() -> None:
    few = [Outcome(0.86, False)] * (MIN_AUDITED - 1)
    assert base_threshold(0.85, few, 0.01) == 0.85
    # Wrong answers crowd the low end: the threshold moves above them.
    wrong_low = [Outcome(0.86 + i * 0.001, False) for i in range(5)]
    right_high = [Outcome(0.90 + i * 0.001, True) for i in range(40)]
    raised = base_threshold(0.85, wrong_low + right_high, 0.01)
    assert 0.865 < raised <= 0.90
    within = [Outcome(0.9, True)] * 200 + [Outcome(0.9, False)]
    assert base_threshold(0.85, within, 0.01) == 0.85


def test_false_hit_upper_bound() -> None:
    assert false_hit_upper_bound(0, 0) == 1.0
    assert 0 < false_hit_upper_bound(0, 300) < 0.01
    assert false_hit_upper_bound(3, 100) > 0.03


def test_audit_is_a_stable_fraction() -> None:
    keys = [f"job-{i}" for i in range(5000)]
    chosen = [k for k in keys if should_audit(k, 0.02)]
    assert 50 <= len(chosen) <= 150
    assert chosen == [k for k in keys if should_audit(k, 0.02)]
    assert not should_audit("x", 0.0)
    assert should_audit("x", 1.0)


def test_choose_serves_the_closest_candidate_that_passes() -> None:
    candidates = [
        Candidate("a", "Is Paris not the capital of France?", 0.95),
        Candidate("b", "Is Paris France's capital?", 0.91),
        Candidate("c", "What is the capital of France?", 0.70),
    ]
    choice = choose("Is Paris the capital of France?", candidates, 0.85)
    assert choice.hit is not None and choice.hit.entry_id == "b"
    assert choice.rejections == (("a", Rejection.NEGATION),)
    wrong_before = Candidate("b", "Is Paris France's capital?", 0.91, (Outcome(0.92, False),))
    refused = choose("Is Paris the capital of France?", [wrong_before], 0.85)
    assert refused.hit is None and refused.rejections == (("b", Rejection.THRESHOLD),)


def chat(*messages: tuple[str, str], temperature: float = 0.0) -> dict[str, object]:
    return {"messages": [{"role": r, "content": c} for r, c in messages],
            "sampling": {"max_tokens": 8, "temperature": temperature, "top_p": 1.0,
                         "stop": [], "seed": None}}


def test_semantic_question_takes_single_questions_only() -> None:
    one = semantic_question("m", chat(("system", "Be brief."), ("user", " Hi? ")))
    assert one is not None and one.text == "Hi?"
    other_system = semantic_question("m", chat(("system", "Be long."), ("user", "Hi?")))
    assert other_system is not None and other_system.context_key != one.context_key
    assert semantic_question("n", chat(("system", "Be brief."), ("user", "Hi?"))) != one
    assert semantic_question("m", chat(("user", "a"), ("assistant", "b"), ("user", "c"))) is None
    assert semantic_question("m", chat(("user", "Hi?"), temperature=0.7)) is None
    prompt = {"prompt": "Hi?", "sampling": {"temperature": 0.0}}
    assert semantic_question("m", prompt) is not None


def test_semantic_mode_reads_and_fills_the_exact_cache_too() -> None:
    from datetime import timedelta

    policy = CachePolicy(enabled=True, ttl=timedelta(days=1), identities={"m": "w"})
    assert parse_cache_mode("semantic") is CacheMode.SEMANTIC
    assert policy.reads("semantic") and policy.writes("semantic")
    assert not policy.reads("refresh") and not policy.writes("off")


def test_the_judge_is_asked_both_questions_and_only_a_plain_yes_serves() -> None:
    from cache.semantic_judge import judge_agrees, judge_messages

    chat = judge_messages("Is Paris the capital of France?", "Is Paris France's capital?")
    assert [role for role, _ in chat] == ["system", "user"]
    assert "Is Paris the capital of France?" in chat[1][1]
    assert "Is Paris France's capital?" in chat[1][1]
    assert judge_agrees("yes") and judge_agrees(" Yes.\n")
    assert not judge_agrees("no") and not judge_agrees("") and not judge_agrees("yes, but")
