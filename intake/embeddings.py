"""The body of an OpenAI `/v1/embeddings` request as penny runs it. Pure.

Each problem is reported as precisely as a chat line's: the code, a message that says what
to change, and the param (`body.input.2`, `body.dimensions`, ...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cache.keys import CacheMode
from intake.cache_option import PENNY_CACHE_FIELD, line_cache_mode
from intake.limits import IntakeLimits
from intake.line_problem import LineProblem

EMBEDDING_FIELDS = frozenset({"model", "input", "encoding_format", "dimensions", "user",
                              PENNY_CACHE_FIELD})
ENCODING_FORMATS = ("float", "base64")
# The hosted API's limit on inputs per request.
MAX_INPUTS = 2048
# Tokens the model adds around every input ([CLS] and [SEP] for BERT-style models).
_SPECIAL_TOKENS_ESTIMATE = 2


@dataclass(frozen=True)
class EmbeddingJobRequest:
    """One embeddings request: a vector for each input, in order."""

    model: str
    inputs: tuple[str, ...]
    encoding_format: str = "float"
    custom_id: str | None = None
    cache: CacheMode = CacheMode.ON

    def engine_request(self) -> dict[str, Any]:
        """What the worker needs, as stored on the job row. The encoding format rides along
        for the output file; the embedder ignores it."""
        return {"input": list(self.inputs), "encoding_format": self.encoding_format}

    def estimated_tokens(self) -> int:
        """The same rough rule as chat jobs (about 3 characters per token); an embedding
        has no output tokens. The worker counts exactly."""
        return sum(len(text) // 3 + _SPECIAL_TOKENS_ESTIMATE for text in self.inputs)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_token_ids(raw: list[Any]) -> bool:
    return all(_is_int(x) for x in raw) or all(
        isinstance(x, list) and x and all(_is_int(y) for y in x) for x in raw)


def _inputs(raw: Any) -> tuple[str, ...]:
    if raw is None:
        raise LineProblem("missing_required_parameter", "input is required", "body.input")
    if isinstance(raw, str):
        if not raw:
            raise LineProblem("invalid_request", "input must not be an empty string",
                              "body.input")
        return (raw,)
    if not isinstance(raw, list):
        raise LineProblem("invalid_request", "input must be a string or a list of strings",
                          "body.input")
    if not raw:
        raise LineProblem("invalid_request", "input must not be an empty list", "body.input")
    if _is_token_ids(raw):
        # Token ids only mean something to the tokenizer that made them; ids counted for a
        # hosted model would silently embed the wrong text here.
        raise LineProblem("unsupported_parameter",
                          "token-id input is not served here; send the text itself",
                          "body.input")
    if len(raw) > MAX_INPUTS:
        raise LineProblem("invalid_request",
                          f"input holds {len(raw)} items; at most {MAX_INPUTS} per request",
                          "body.input")
    for index, item in enumerate(raw):
        if not isinstance(item, str):
            raise LineProblem("invalid_request", "each input must be a string",
                              f"body.input.{index}")
        if not item:
            raise LineProblem("invalid_request", "an input must not be an empty string",
                              f"body.input.{index}")
    return tuple(raw)


def _model(raw: Any, limits: IntakeLimits) -> str:
    if raw is not None and (not isinstance(raw, str) or not raw):
        raise LineProblem("invalid_request", "model must be a non-empty string", "body.model")
    model = raw or limits.default_embedding_model
    if model not in limits.embedding_models:
        served = ", ".join(sorted(limits.embedding_models)) or "none"
        what = "is a chat model, not an embedding model" if model in limits.models else (
            "is not served here")
        raise LineProblem("model_not_found",
                          f"model '{model}' {what} (embedding models: {served})", "body.model")
    return model


def _check_dimensions(raw: Any, model: str, dimensions: int) -> None:
    if raw is None:
        return
    if not _is_int(raw) or raw < 1:
        raise LineProblem("invalid_request", "dimensions must be a positive integer",
                          "body.dimensions")
    if raw != dimensions:
        raise LineProblem("unsupported_parameter",
                          f"model {model} makes {dimensions}-dimensional vectors and cannot "
                          f"shorten them; dimensions={raw} is not served here",
                          "body.dimensions")


def parse_embedding_body(
    body: dict[str, Any], custom_id: str | None, limits: IntakeLimits
) -> EmbeddingJobRequest:
    """Validate one `/v1/embeddings` body; raise `LineProblem` naming the first fault."""
    for key in body:
        if key not in EMBEDDING_FIELDS:
            raise LineProblem("unsupported_parameter",
                              f"unknown or unsupported parameter {key!r}", f"body.{key}")
    model = _model(body.get("model"), limits)
    inputs = _inputs(body.get("input"))
    encoding_format = body.get("encoding_format")
    if encoding_format is None:
        encoding_format = "float"
    if encoding_format not in ENCODING_FORMATS:
        raise LineProblem("unsupported_parameter",
                          f"encoding_format={json.dumps(encoding_format)} is not served here "
                          f"({', '.join(ENCODING_FORMATS)})", "body.encoding_format")
    _check_dimensions(body.get("dimensions"), model, limits.embedding_models[model])
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise LineProblem("invalid_request", "user must be a string", "body.user")
    chars = sum(len(text) for text in inputs)
    if chars > limits.max_prompt_chars:
        raise LineProblem("invalid_request",
                          f"the input has {chars} characters; the limit is "
                          f"{limits.max_prompt_chars}", "body.input")
    return EmbeddingJobRequest(model=model, inputs=inputs, encoding_format=encoding_format,
                               custom_id=custom_id, cache=line_cache_mode(body) or CacheMode.ON)
