"""`compress`: opt-in prompt compression as a job asks for it. Pure.

Natively the job's `compress` field; in OpenAI batch lines and Anthropic batch params the
`penny_compress` extension (the SDKs send it through `extra_body`). Off unless asked for:
compression drops sentences of the client's context, which only the client may allow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict

from routing.policy import tag_matches

PENNY_COMPRESS_FIELD = "penny_compress"
DEFAULT_RATIO = 0.5
DEFAULT_MIN_CONTEXT_CHARS = 2000


class CompressOption(BaseModel):
    """Keep about `ratio` of the prompt's context (sentences most relevant to the question,
    in their order); contexts shorter than `min_context_chars` run as written."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ratio: Annotated[float, Strict()] = Field(default=DEFAULT_RATIO, ge=0.1, le=0.9)
    min_context_chars: Annotated[int, Strict()] = Field(default=DEFAULT_MIN_CONTEXT_CHARS,
                                                        ge=0, le=1_000_000)

    def stored(self) -> dict[str, Any]:
        """As the job row stores it (and so as the single-flight and cache keys see it)."""
        return {"ratio": self.ratio, "min_context_chars": self.min_context_chars}


@dataclass(frozen=True)
class TagCompression:
    """A deployment's opt-in for one metadata tag (`key` or `key=value`, as the routing
    policy writes tags): its jobs that ask nothing about compression are compressed so."""

    tag: str
    option: CompressOption


def tag_compressions(policies: Mapping[str, CompressOption]) -> tuple[TagCompression, ...]:
    """The policies in declared order."""
    return tuple(TagCompression(tag, option) for tag, option in policies.items())


def compression_for(asked: CompressOption | None, metadata: Mapping[str, Any],
                    policies: Sequence[TagCompression]) -> CompressOption | None:
    """What a job is compressed with: what it asked for, else the first policy whose tag it
    carries, else nothing."""
    if asked is not None:
        return asked
    return next((p.option for p in policies if tag_matches(p.tag, metadata)), None)
