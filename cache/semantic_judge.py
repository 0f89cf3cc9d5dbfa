"""The small-model judge: an optional second stage after verification (`semantic_verify`).
Pure: the question the model is asked and how its answer is read.

A candidate that cleared its threshold and every rule is put to the worker's own model as
one more request of the batch's engine pass: do the two questions ask the same thing? The
answer is constrained to "yes" or "no" (guided decoding), greedy, two tokens at most.
Anything but a plain "yes" is a no: like every rule, the judge errs towards a miss.
"""

from __future__ import annotations

JUDGE_CHOICES = ("yes", "no")
JUDGE_MAX_TOKENS = 2

_SYSTEM = ("You compare two questions. Answer yes if they ask for exactly the same "
           "information, so that one answer is right for both; answer no if anything differs: "
           "a negation, a number, a unit, a name, a direction, an action or the language.")


def judge_messages(cached_question: str, asked_question: str) -> tuple[tuple[str, str], ...]:
    """The (role, content) chat the judge answers."""
    return (
        ("system", _SYSTEM),
        ("user", f"Question 1: {cached_question}\nQuestion 2: {asked_question}\n"
                 "Do they ask for exactly the same information? Answer yes or no."),
    )


def judge_agrees(answer: str) -> bool:
    """Whether the judge's answer lets the cached answer be served."""
    return answer.strip().lower().rstrip(".!") == "yes"
