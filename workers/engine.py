"""The engine port: a whole batch in, one generation per job out.

Workers talk to this Protocol only; `workers.vllm_engine` is its one real adapter.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from workers.guided_decoding import OutputConstraint


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias) pairs
    # Whether the engine computes the answer's log-probabilities (`Generation.mean_logprob`).
    # They cost engine speed, so only jobs that asked, or a cascade that reads them, set it.
    logprobs: bool = False
    # Per-token log-probabilities in the answer (OpenAI's `logprobs.content`), each with
    # this many most likely alternatives (0-20); None: not asked for.
    top_logprobs: int | None = None
    # Samples of the one prompt, computed together (the prompt is read once).
    n: int = 1


@dataclass(frozen=True)
class GenerationRequest:
    """One job as the engine sees it. `key` is echoed back on its generation."""

    key: str
    sampling: Sampling
    messages: tuple[tuple[str, str], ...] | None = None  # (role, content) pairs
    prompt: str | None = None
    # Requests with different salts never share prefix-cache entries (tenant isolation).
    cache_salt: str | None = None
    # Guided decoding: what the answer must match (a JSON schema, JSON, a regex, a choice).
    constraint: OutputConstraint | None = None
    # Functions offered to the model (OpenAI's tool shape), rendered by its chat template.
    tools: tuple[dict[str, Any], ...] | None = None

    @classmethod
    def from_stored(cls, key: str, request: dict[str, Any], cache_salt: str) -> GenerationRequest:
        """Build from a job row's `request` document (see `JobRequest.engine_request`)."""
        sampling = request["sampling"]
        messages = request.get("messages")
        return cls(
            key=key,
            sampling=Sampling(
                max_tokens=int(sampling["max_tokens"]),
                temperature=float(sampling["temperature"]),
                top_p=float(sampling["top_p"]),
                stop=tuple(sampling.get("stop") or ()),
                seed=sampling.get("seed"),
                presence_penalty=float(sampling.get("presence_penalty", 0.0)),
                frequency_penalty=float(sampling.get("frequency_penalty", 0.0)),
                logit_bias=tuple((int(token), float(bias))
                                 for token, bias in (sampling.get("logit_bias") or {}).items()),
                logprobs=bool(sampling.get("logprobs", False)),
                top_logprobs=sampling.get("top_logprobs"),
                n=int(sampling.get("n", 1)),
            ),
            messages=tuple((m["role"], m["content"]) for m in messages) if messages else None,
            prompt=request.get("prompt"),
            cache_salt=cache_salt,
            constraint=OutputConstraint.from_stored(request.get("constraint")),
            tools=tuple(request["tools"]) if request.get("tools") else None,
        )


@dataclass(frozen=True)
class Sample:
    """One of an n > 1 request's further answers (the first is the generation itself)."""

    text: str
    finish_reason: str
    output_tokens: int
    token_logprobs: tuple[dict[str, Any], ...] | None = None

    def stored(self) -> dict[str, Any]:
        return {"text": self.text, "finish_reason": self.finish_reason,
                "output_tokens": self.output_tokens,
                "token_logprobs": list(self.token_logprobs) if self.token_logprobs is not None
                else None}


@dataclass(frozen=True)
class Generation:
    """The outcome of one request: either text with its token accounting, or an error.

    With n > 1, `text`, `finish_reason` and `token_logprobs` are the first sample's and
    `samples` holds the others; `output_tokens` counts every sample's tokens."""

    key: str
    text: str = ""
    finish_reason: str = ""
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    # OpenAI's `logprobs.content` entries ({token, logprob, bytes, top_logprobs}), when the
    # request's sampling asked for `top_logprobs`.
    token_logprobs: tuple[dict[str, Any], ...] | None = None
    samples: tuple[Sample, ...] = ()
    mean_logprob: float | None = None  # None unless the request's sampling asked for it
    min_logprob: float | None = None  # the least likely token's; likewise
    error_code: str | None = None
    error_message: str | None = None
    # For a failed request: whether the engine worked on it before it failed (it ran in
    # the batch: its uncached prompt prefilled, `output_tokens` decoded). One that ran is
    # billed its share of the batch; one refused before the engine (a prompt over the
    # context window) bills nothing.
    ran: bool = False

    @property
    def ok(self) -> bool:
        return self.error_code is None

    @property
    def billable(self) -> bool:
        """Whether it used engine time: every answer, and a failure that ran."""
        return self.ok or self.ran


CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
# A chat template reads the offered tools from a variable of this name (the convention of
# Hugging Face chat templates that take tools).
_TOOLS_VARIABLE = re.compile(r"\{[{%][^}]*\btools\b")


def template_takes_tools(template: str | None) -> bool:
    """Whether a chat template has a place for tools: it reads `tools` in a Jinja
    expression or statement. One that does not would render a prompt without them."""
    return bool(template) and _TOOLS_VARIABLE.search(template or "") is not None


def no_tools_message(model: str) -> str:
    return (f"model {model}'s chat template takes no tools, so tool / function calling is "
            f"not served for it; send this line without tools, or to a model whose chat "
            f"template takes them")


def context_overflow(prompt_tokens: int, max_tokens: int, context: int, model: str
                     ) -> str | None:
    """Why a request does not fit the model's context window, or None when it does.

    The prompt and the whole answer allowance must fit: cutting the answer short to make
    it fit would bill a truncated answer as if it were the one asked for."""
    if prompt_tokens + max_tokens <= context:
        return None
    return (f"the prompt has {prompt_tokens} tokens and max_tokens is {max_tokens}: "
            f"{prompt_tokens + max_tokens} tokens, over model {model}'s context window of "
            f"{context}; shorten the prompt or lower max_tokens to at most "
            f"{max(context - prompt_tokens, 0)}")


@dataclass(frozen=True)
class BatchGeneration:
    generations: tuple[Generation, ...]
    engine_seconds: float


class Engine(Protocol):
    @property
    def model_name(self) -> str: ...

    def prompt_token_ids(self, request: GenerationRequest) -> list[int]:
        """The exact prompt the engine runs for `request` (the coalescer groups by it)."""
        ...

    def generate(self, requests: Sequence[GenerationRequest]) -> BatchGeneration:
        """Run every request in one engine pass; never raise for one bad request."""
        ...
