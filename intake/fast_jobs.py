"""The common job, built without the general validator. Pure.

Most bulk items and CSV rows are plain: a prompt or a few chat messages, a named (or the
default) model, max_tokens, maybe temperature/top_p/seed, an id and a few string tags.
For those, `plain_job` checks every rule `JobRequest` and `resolve_model` apply and builds
the very `NewJob` that `new_job` would, at a fraction of pydantic's per-item cost (it led
the profile of bulk and CSV intake).

It only ever accepts: anything outside the plain shape, and anything that breaks a rule,
answers None, and the caller takes the general path, which builds the job or words the
precise error. So an error message is always the general validator's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cache.keys import CacheMode
from intake.cache_option import cache_mode_for
from intake.compress_option import compression_for
from intake.limits import IntakeLimits
from intake.max_tokens_caps import JobCaps, capped_sampling
from intake.schema import MAX_TAGS
from intake.text import unstorable_reason
from models.submissions import NewJob
from routing.router import ROUTED_MODELS

_ROLES = frozenset({"system", "user", "assistant"})
# The fields a plain job may carry; any other sends it down the general path.
_PLAIN_FIELDS = frozenset({"model", "messages", "prompt", "max_tokens", "temperature",
                           "top_p", "seed", "custom_id", "metadata", "priority", "cache"})
# `semantic` needs the deployment's semantic cache: the general path says so or allows it.
_PLAIN_CACHE = {mode.value: mode for mode in (CacheMode.ON, CacheMode.OFF, CacheMode.REFRESH)}
_MAX_MESSAGES = 256
_MAX_SEED = 2**63 - 1
_DEFAULT_MAX_TOKENS = 256
_ABSENT = object()


def _storable(value: object) -> bool:
    return type(value) is str and unstorable_reason(value) is None


def _prompt_text(value: object) -> bool:
    return _storable(value) and bool(value.strip())  # type: ignore[attr-defined]


def _number(value: object, default: float) -> float | None:
    """A strict float field's value as stored (an int reads as its float), or None. Its
    range is the caller's to check; a large int is left to the general path."""
    if value is _ABSENT:
        return default
    if type(value) is float:
        return value
    if type(value) is int and -4 <= value <= 4:
        return float(value)
    return None


def _messages(value: object) -> tuple[list[dict[str, str]], int] | None:
    """Stored messages and their characters, or None when any is not plain."""
    if type(value) is not list or not 1 <= len(value) <= _MAX_MESSAGES:
        return None
    stored: list[dict[str, str]] = []
    chars = 0
    for message in value:
        if type(message) is not dict or len(message) != 2:
            return None
        role, content = message.get("role"), message.get("content")
        if (type(role) is not str or role not in _ROLES or type(content) is not str
                or not _prompt_text(content)):
            return None
        stored.append({"role": role, "content": content})
        chars += len(content)
    return stored, chars


def _tags(value: object) -> dict[str, Any] | None:
    if value is _ABSENT:
        return {}
    if type(value) is not dict or len(value) > MAX_TAGS:
        return None
    for key, item in value.items():
        if not _storable(key) or not _storable(item):
            return None
    return dict(value)


def _model(value: object, limits: IntakeLimits) -> str | None:
    """The served chat model a plain job names (or the default), or None."""
    if value is None:
        if limits.tag_routes:  # the tags may pick the tier: the general path knows how
            return None
        value = limits.default_model
    elif type(value) is not str or not 1 <= len(value) <= 200 or not _storable(value):
        return None
    if (value in ROUTED_MODELS or value not in limits.models
            or value in limits.embedding_models):
        return None
    return value


def _sampling(get: Any, model: str, limits: IntakeLimits) -> dict[str, Any] | None:
    """The stored sampling parameters (`engine_request`'s), or None."""
    max_tokens = get("max_tokens", _DEFAULT_MAX_TOKENS)
    if (type(max_tokens) is not int or not 1 <= max_tokens <= limits.max_output_tokens
            or max_tokens >= limits.context_of(model)):
        return None
    temperature = _number(get("temperature", _ABSENT), 0.0)
    top_p = _number(get("top_p", _ABSENT), 1.0)
    if (temperature is None or not 0.0 <= temperature <= 2.0
            or top_p is None or not 0.0 < top_p <= 1.0):
        return None
    seed = get("seed")
    if seed is not None and (type(seed) is not int or not 0 <= seed <= _MAX_SEED):
        return None
    return {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p,
            "stop": [], "seed": seed}


def _input(get: Any, body: dict[str, Any]) -> int | None:
    """Put the messages or the prompt into `body`; their characters, or None."""
    messages, prompt = get("messages"), get("prompt")
    if prompt is None:
        plain = _messages(messages)
        if plain is None:
            return None
        body["messages"], chars = plain
        return chars
    if messages is None and _prompt_text(prompt):
        body["prompt"] = prompt
        return len(prompt)
    return None


def plain_job(payload: object, line_no: int, limits: IntakeLimits,
              input_row: Sequence[str] | None = None, caps: JobCaps | None = None
              ) -> NewJob | None:
    """The job `new_job(line_no, JobRequest(payload), resolve_model(...), limits)` builds,
    with `input_row` set and the tenant's `caps` applied (`JobCaps.job`), when `payload` is
    plain and valid; None otherwise (the general path then decides)."""
    if type(payload) is not dict or not _PLAIN_FIELDS.issuperset(payload):
        return None
    get = payload.get
    model = _model(get("model"), limits)
    sampling = None if model is None else _sampling(get, model, limits)
    if model is None or sampling is None:
        return None
    priority = get("priority", 0)
    custom_id = get("custom_id")
    tags = _tags(get("metadata", _ABSENT))
    cache = get("cache", _ABSENT)
    if cache is _ABSENT:  # a job that names no mode takes its tags' (as `new_job` does)
        cache_mode = None if tags is None else cache_mode_for(None, tags, limits.tag_cache)
    else:
        cache_mode = _PLAIN_CACHE.get(cache) if type(cache) is str else None
    if (type(priority) is not int or not -100 <= priority <= 100
            or (custom_id is not None
                and (not _storable(custom_id) or not 1 <= len(custom_id) <= 500))
            or cache_mode is None or tags is None):
        return None
    cap = None if caps is None else caps.cap_of(tags)
    if cap is not None:  # lowered where the request is built: no second copy of the job
        sampling = capped_sampling(sampling, cap) or sampling
    body: dict[str, Any] = {"sampling": sampling}
    chars = _input(get, body)
    if chars is None or chars > limits.max_prompt_chars:
        return None
    if limits.tag_compression:
        compress = compression_for(None, tags, limits.tag_compression)
        if compress is not None:
            body["compress"] = compress.stored()
    return NewJob(
        line_no=line_no,
        model=model,
        request=body,
        estimated_tokens=chars // 3 + 8 + sampling["max_tokens"],
        custom_id=custom_id,
        tags=tags,
        priority=priority,
        cache_mode=cache_mode,
        input_row=None if input_row is None else list(input_row),
    )
