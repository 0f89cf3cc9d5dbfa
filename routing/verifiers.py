"""Verifiers for the cascade: a check on the answer itself that, when it fails, sends the
job to the next tier however confident the small tier was.

A verifier is any callable from the answer's text to a reason to escalate (or None to
pass): the `Verifier` port. Two come built in, configured per metadata tag: the answer
parses as JSON, and the answer matches a regular expression. Both are pure and cheap;
the worker runs them on every cascade answer of a tier that is not the last.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from routing.policy import tag_matches

JSON_KIND = "json"
REGEX_KIND = "regex"
VerifierKind = Literal["json", "regex"]


class Verifier(Protocol):
    def __call__(self, answer: str) -> str | None:
        """Why the answer fails (the job escalates), or None when it passes."""
        ...


def parses_as_json(answer: str) -> str | None:
    try:
        json.loads(answer)
    except json.JSONDecodeError as error:
        return f"the answer is not JSON ({error.msg} at char {error.pos})"
    return None


@dataclass(frozen=True)
class MatchesRegex:
    """The answer (stripped of surrounding whitespace) must match `pattern` in full."""

    pattern: str

    def __call__(self, answer: str) -> str | None:
        if re.fullmatch(self.pattern, answer.strip(), flags=re.DOTALL) is None:
            return f"the answer does not match /{self.pattern}/"
        return None


def build_verifier(kind: VerifierKind, pattern: str | None = None) -> Verifier:
    if kind == JSON_KIND:
        return parses_as_json
    if pattern is None:
        raise ValueError("a regex verifier needs a pattern")
    re.compile(pattern)  # a bad pattern fails here, at configuration, not on an answer
    return MatchesRegex(pattern)


@dataclass(frozen=True)
class TaggedVerifier:
    tag: str  # `key` or `key=value` (routing.policy)
    verifier: Verifier


def verifier_for(metadata: Mapping[str, Any] | None, verifiers: Sequence[TaggedVerifier]
                 ) -> TaggedVerifier | None:
    """The first verifier, in declared order, whose tag the job carries."""
    if not metadata:
        return None
    return next((v for v in verifiers if tag_matches(v.tag, metadata)), None)
