"""The job request as clients send it: over HTTP, in a JSONL line or in a CSV row.

One pydantic model validates every path in, so a field means the same thing everywhere.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    Strict,
    StrictBool,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from cache.keys import CacheMode
from intake.compress_option import CompressOption
from intake.structured import Guided, ResponseFormat, output_constraint
from intake.text import PromptText, StorableText, unstorable_paths
from intake.tools import Tools, stored_tools

MAX_STOP_SEQUENCES = 4
MAX_TAGS = 16
MAX_LOGIT_BIAS_ENTRIES = 300  # the hosted API's limit
MAX_TOP_LOGPROBS = 20  # the hosted API's limit
# Samples per request. The hosted API allows 128; every sample is a sequence in the
# engine's batch, so a few large-n requests would crowd out everyone else's.
MAX_N = 16
COMPLETION_WINDOW_PATTERN = r"^[1-9][0-9]{0,5}[smh]$"
MAX_COMPLETION_WINDOW = timedelta(days=7)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}


def completion_window_length(text: str) -> timedelta | None:
    """"90s", "30m", "24h" -> its length; None when it is not written that way."""
    if re.fullmatch(COMPLETION_WINDOW_PATTERN, text) is None:
        return None
    return timedelta(seconds=int(text[:-1]) * _UNIT_SECONDS[text[-1]])


def parse_completion_window(text: str) -> timedelta:
    window = completion_window_length(text)
    if window is None:
        raise ValueError(f"completion_window {text!r} is not like '24h', '30m' or '90s'")
    if window > MAX_COMPLETION_WINDOW:
        raise ValueError(f"completion_window may be at most {MAX_COMPLETION_WINDOW.days} days")
    return window

class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant"]
    content: PromptText


# Numbers are taken as numbers only: "8" or true for max_tokens is a client bug, and
# coercing it (true ran as 1) would run something nobody asked for. CSV cells are text by
# nature; the CSV mapper converts them itself (intake.files).
StrictInt = Annotated[int, Strict()]
StrictFloat = Annotated[float, Strict()]  # an integer is still a number here; a bool is not
Penalty = Annotated[float, Strict(), Field(ge=-2.0, le=2.0)]
# Token ids are JSON object keys, so strings of digits; each bias is -100..100.
TokenId = Annotated[str, Field(pattern=r"^(0|[1-9][0-9]{0,8})$")]
Bias = Annotated[float, Strict(), Field(ge=-100.0, le=100.0)]


class JobRequest(BaseModel):
    """One generation job: chat `messages` or a plain `prompt`, plus sampling parameters."""

    model_config = ConfigDict(extra="forbid")

    model: StorableText | None = Field(default=None, min_length=1, max_length=200)
    messages: list[ChatMessage] | None = Field(default=None, min_length=1, max_length=256)
    prompt: PromptText | None = None
    max_tokens: StrictInt = Field(default=256, ge=1)
    temperature: StrictFloat = Field(default=0.0, ge=0.0, le=2.0)
    top_p: StrictFloat = Field(default=1.0, gt=0.0, le=1.0)
    stop: list[StorableText] | None = Field(default=None, max_length=MAX_STOP_SEQUENCES)
    seed: StrictInt | None = Field(default=None, ge=0, le=2**63 - 1)
    presence_penalty: Penalty = 0.0
    frequency_penalty: Penalty = 0.0
    logit_bias: dict[TokenId, Bias] | None = Field(default=None,
                                                   max_length=MAX_LOGIT_BIAS_ENTRIES)
    # What the answer must look like (guided decoding): a JSON object, a JSON schema, or
    # with `guided` a regex or a choice list. See intake.structured.
    response_format: ResponseFormat | None = None
    guided: Guided | None = None
    # Ask for the answer's mean token log-probability (`mean_logprob` in the result, a
    # confidence signal). Off by default: computing logprobs costs the engine 4-14% of its
    # speed, so only the jobs that read it pay for it.
    logprobs: StrictBool = False
    # The answer's per-token log-probabilities (result `logprobs`, OpenAI's
    # `logprobs.content` shape), each with this many most likely alternatives.
    top_logprobs: StrictInt | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    # Samples of the one prompt, computed together; `choices` in the result holds them
    # all and usage counts all their tokens.
    n: StrictInt = Field(default=1, ge=1, le=MAX_N)
    # Functions the model may call (chat jobs, models whose chat template takes tools):
    # the answer's tool calls come back as `tool_calls`. See intake.tools.
    tools: Tools | None = None
    # Lower runs sooner when the engines are backed up; ties go to the older job.
    priority: StrictInt = Field(default=0, ge=-100, le=100)
    # "90s", "30m", "1h", "24h": when the job should be done; near it, it goes out first.
    completion_window: str | None = Field(default=None, pattern=COMPLETION_WINDOW_PATTERN)
    custom_id: StorableText | None = Field(default=None, min_length=1, max_length=500)
    metadata: dict[StorableText, JsonValue] = Field(default_factory=dict, max_length=MAX_TAGS)
    # The exact result cache: "on" (answered from it when it can), "off" (neither read
    # nor written), "refresh" (run fresh and replace the entry). See cache.keys.
    cache: CacheMode = CacheMode.ON
    # Opt-in prompt compression of the context (see intake.compress_option); never on
    # unless asked for.
    compress: CompressOption | None = None

    @field_validator("metadata")
    @classmethod
    def _storable_metadata(cls, metadata: dict[str, JsonValue]) -> dict[str, JsonValue]:
        # Keys are StorableText already; values may nest strings anywhere.
        for path, reason in unstorable_paths(metadata):
            raise PydanticCustomError("unstorable_text", "{path}: {reason}",
                                      {"path": path, "reason": reason})
        return metadata

    @model_validator(mode="after")
    def _exactly_one_input(self) -> JobRequest:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of 'messages' or 'prompt'")
        if self.stop is not None and any(not s for s in self.stop):
            raise ValueError("stop sequences must be non-empty strings")
        if self.completion_window is not None:
            parse_completion_window(self.completion_window)
        if self.tools is not None and self.messages is None:
            raise ValueError("tools are offered to chat jobs ('messages') only")
        self.output_constraint()  # raises for guided with both kinds, or with a JSON format
        return self

    def output_constraint(self) -> dict[str, Any] | None:
        return output_constraint(self.response_format, self.guided)

    def complete_within(self) -> timedelta | None:
        if self.completion_window is None:
            return None
        return parse_completion_window(self.completion_window)

    def prompt_chars(self) -> int:
        if self.messages is not None:
            return sum(len(m.content) for m in self.messages)
        return len(self.prompt or "")

    def engine_request(self) -> dict[str, Any]:
        """What the worker needs to run the job, as stored on the job row."""
        body: dict[str, Any] = {
            "sampling": {
                "max_tokens": self.max_tokens,
                "temperature": self.temperature,
                "top_p": self.top_p,
                "stop": self.stop or [],
                "seed": self.seed,
            }
        }
        # Only what differs from the defaults is stored, so a plain job's document (and
        # its single-flight key) is the same as before these parameters existed.
        sampling = body["sampling"]
        if self.presence_penalty:
            sampling["presence_penalty"] = self.presence_penalty
        if self.frequency_penalty:
            sampling["frequency_penalty"] = self.frequency_penalty
        if self.logit_bias:
            sampling["logit_bias"] = {k: self.logit_bias[k] for k in sorted(self.logit_bias)}
        constraint = self.output_constraint()
        if constraint is not None:
            body["constraint"] = constraint
        if self.logprobs or self.top_logprobs is not None:
            # Only when asked: the stored document (and so the single-flight key) of a job
            # without it stays as it was, and a copy that wants logprobs never shares a
            # run that computed none.
            sampling["logprobs"] = True
        if self.top_logprobs is not None:
            sampling["top_logprobs"] = self.top_logprobs
        if self.n > 1:
            sampling["n"] = self.n
        if self.compress is not None:
            body["compress"] = self.compress.stored()
        if self.tools is not None:
            body["tools"] = stored_tools(self.tools)
        if self.messages is not None:
            body["messages"] = [m.model_dump() for m in self.messages]
        else:
            body["prompt"] = self.prompt
        return body


def estimate_tokens(request: JobRequest) -> int:
    """A cheap upper-ish bound used to size batches before any tokenizer has run.

    Roughly 3 characters per token for English text plus the whole output allowance; the
    worker counts exactly.
    """
    return request.prompt_chars() // 3 + 8 + request.max_tokens * request.n
