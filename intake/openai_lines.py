"""OpenAI batch input files: each line `{custom_id, method, url, body}` becomes a job request,
or an error that names its line. Pure.

Unlike penny's own files, a batch with any bad line fails as a whole before anything runs,
as the hosted Batch API does; so the parser reports every bad line at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from intake.cache_option import PENNY_CACHE_FIELD, line_cache_mode
from intake.compress_option import PENNY_COMPRESS_FIELD
from intake.embeddings import EmbeddingJobRequest, parse_embedding_body
from intake.limits import IntakeLimits, resolve_model
from intake.line_problem import LineProblem
from intake.schema import JobRequest
from intake.structured import field_path
from intake.text import escape_unstorable, load_json, unstorable_paths
from penny.errors import InvalidJson, PennyError

CHAT_ENDPOINT = "/v1/chat/completions"
COMPLETIONS_ENDPOINT = "/v1/completions"
EMBEDDINGS_ENDPOINT = "/v1/embeddings"
SERVED_ENDPOINTS = (CHAT_ENDPOINT, COMPLETIONS_ENDPOINT, EMBEDDINGS_ENDPOINT)
# Endpoints the hosted API knows; a line naming one of these gets "not served here" rather
# than "no such url".
KNOWN_ENDPOINTS = (*SERVED_ENDPOINTS, "/v1/responses", "/v1/moderations")
MAX_CUSTOM_ID_CHARS = 500
# The hosted API's default for /v1/completions; chat falls back to penny's own default.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16

# Body fields that change nothing about the answer penny returns.
_IGNORED_FIELDS = frozenset({"user", "store", "metadata", "service_tier", "stream_options",
                             "parallel_tool_calls", "prompt_cache_key", "safety_identifier"})
# Fields accepted only at the value that means "off": anything else asks for a feature
# penny does not implement, and silently ignoring it would return a different answer.
_DEFAULT_ONLY: dict[str, tuple[Any, ...]] = {
    "stream": (False,), "echo": (False,), "best_of": (1,), "suffix": (None,),
    "tools": (None, []), "tool_choice": (None, "none", "auto"), "functions": (None, []),
    "function_call": (None, "none"),
}
# A chat line may offer tools (_CHAT_FIELDS); only the model choosing whether to call one
# is served.
# On /v1/completions, logprobs is a number and answers in another shape; not served.
_COMPLETIONS_DEFAULT_ONLY: dict[str, tuple[Any, ...]] = {
    **_DEFAULT_ONLY, "logprobs": (None,)}
# Why each of those is refused, so the line error says more than "not served".
_WHY_REFUSED = {
    "tools": "tools are offered on /v1/chat/completions lines only",
    "tool_choice": "only 'auto' and 'none' are served here: forcing a call is not",
    "functions": "the deprecated functions parameter is not served here; use tools",
    "function_call": "the deprecated function_call parameter is not served here; use "
                     "tools",
    "logprobs": "logprobs are returned on /v1/chat/completions lines only",
    "stream": "batches do not stream",
}
# Passed through to the job request as they are (JobRequest validates them).
_PASSED = ("model", "temperature", "top_p", "seed", "presence_penalty", "frequency_penalty",
           "logit_bias", "response_format", "n")
# penny's extension on a line: {"regex": ...} or {"choice": [...]}, the native `guided`.
GUIDED_FIELD = "penny_guided"
_SAMPLING_FIELDS = frozenset({"model", "max_tokens", "temperature", "top_p", "stop", "seed",
                              "presence_penalty", "frequency_penalty", "logit_bias",
                              "response_format", GUIDED_FIELD, "n",
                              PENNY_CACHE_FIELD, PENNY_COMPRESS_FIELD})
_CHAT_FIELDS = _SAMPLING_FIELDS | {"messages", "max_completion_tokens", "logprobs",
                                   "top_logprobs", "tools"}
_COMPLETION_FIELDS = _SAMPLING_FIELDS | {"prompt"}
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@dataclass(frozen=True)
class BatchLine:
    line: int
    custom_id: str
    model: str
    # A generation (chat or completions line) or an embeddings request.
    request: JobRequest | EmbeddingJobRequest


@dataclass(frozen=True)
class BatchLineError:
    line: int | None
    code: str
    message: str
    param: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "code": self.code, "message": self.message,
                "param": self.param}


@dataclass(frozen=True)
class BatchInput:
    lines: list[BatchLine]
    errors: list[BatchLineError]


def _text_content(content: Any, where: str) -> str:
    """Message content as penny runs it: a string, or a list of text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for index, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(
                part.get("text"), str
            ):
                raise LineProblem("unsupported_parameter",
                                  "only text content parts are served here",
                                  f"{where}.{index}")
            texts.append(part["text"])
        return "".join(texts)
    raise LineProblem("invalid_request", "content must be a string or a list of text parts",
                      where)


def _messages(raw: Any) -> list[dict[str, str]]:
    if not isinstance(raw, list):
        raise LineProblem("invalid_request", "messages must be a list", "body.messages")
    messages = []
    for index, message in enumerate(raw):
        where = f"body.messages.{index}"
        if not isinstance(message, dict):
            raise LineProblem("invalid_request", "each message must be an object", where)
        if message.get("tool_calls"):
            raise LineProblem("unsupported_parameter",
                              "assistant tool_calls (tool results fed back) are not served "
                              "here", f"{where}.tool_calls")
        role = _ROLES.get(str(message.get("role")))
        if role is None:
            raise LineProblem("unsupported_parameter",
                              f"role {message.get('role')!r} is not served here "
                              "(system, developer, user, assistant)", f"{where}.role")
        messages.append({"role": role,
                         "content": _text_content(message.get("content"), f"{where}.content")})
    return messages


def _stop(raw: Any) -> list[str] | None:
    if raw is None:
        return None
    return [raw] if isinstance(raw, str) else raw  # a wrong type is left for the schema


def _check_fields(body: dict[str, Any], allowed: frozenset[str],
                  default_only: dict[str, tuple[Any, ...]] = _DEFAULT_ONLY) -> None:
    for key, value in body.items():
        if key in allowed or key in _IGNORED_FIELDS:
            continue
        if key in default_only:
            if value in default_only[key]:
                continue
            why = _WHY_REFUSED.get(key, "not served here")
            raise LineProblem("unsupported_parameter",
                              f"{key}={json.dumps(value)[:200]}: {why}", f"body.{key}")
        raise LineProblem("unsupported_parameter", f"unknown or unsupported parameter {key!r}",
                          f"body.{key}")


def _chat_logprobs(body: dict[str, Any]) -> dict[str, Any]:
    """A chat line's `logprobs` / `top_logprobs` as the job's `top_logprobs` (absent when
    logprobs are not asked for). As the hosted API: top_logprobs needs logprobs true."""
    logprobs, top = body.get("logprobs"), body.get("top_logprobs")
    if logprobs not in (None, True, False):
        raise LineProblem("invalid_request", "logprobs must be true or false",
                          "body.logprobs")
    if not logprobs:
        if top not in (None, 0):
            raise LineProblem("invalid_request",
                              "top_logprobs needs logprobs set to true", "body.top_logprobs")
        return {}
    return {"top_logprobs": 0 if top is None else top}


def _job_payload(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """Map an OpenAI request body onto penny's job request fields."""
    if url == CHAT_ENDPOINT:
        _check_fields(body, _CHAT_FIELDS)
        if "messages" not in body:
            raise LineProblem("missing_required_parameter", "messages is required",
                              "body.messages")
        payload: dict[str, Any] = {"messages": _messages(body["messages"]),
                                   **_chat_logprobs(body)}
        # tool_choice "none": the model may not call a tool, so none is offered.
        if body.get("tools") and body.get("tool_choice") != "none":
            payload["tools"] = body["tools"]
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    else:
        _check_fields(body, _COMPLETION_FIELDS, _COMPLETIONS_DEFAULT_ONLY)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise LineProblem("invalid_request", "prompt must be a string", "body.prompt")
        payload = {"prompt": prompt}
        max_tokens = body.get("max_tokens", COMPLETIONS_DEFAULT_MAX_TOKENS)
    if max_tokens is not None:
        payload["max_tokens"] = max_tokens
    for key in _PASSED:
        if body.get(key) is not None:
            payload[key] = body[key]
    stop = _stop(body.get("stop"))
    if stop is not None:
        payload["stop"] = stop
    return {**payload, **_penny_extensions(body)}


def _penny_extensions(body: dict[str, Any]) -> dict[str, Any]:
    """penny's extensions in a line's body, as job fields; each only when the line names
    it (a line naming no `penny_cache` takes the deployment's per-tag policy)."""
    fields: dict[str, Any] = {}
    if body.get(GUIDED_FIELD) is not None:
        fields["guided"] = body[GUIDED_FIELD]
    if body.get(PENNY_COMPRESS_FIELD) is not None:
        fields["compress"] = body[PENNY_COMPRESS_FIELD]
    cache = line_cache_mode(body)
    if cache is not None:
        fields["cache"] = cache
    return fields


def _schema_param(error: ValidationError) -> tuple[str, str]:
    first = error.errors()[0]
    path = field_path(first["loc"])
    if path[:1] == ("guided",):  # the line calls it penny_guided
        path = (GUIDED_FIELD, *path[1:])
    if path[:1] == ("compress",):
        path = (PENNY_COMPRESS_FIELD, *path[1:])
    location = escape_unstorable(".".join(str(p) for p in path))
    param = f"body.{location}" if location else "body"
    return param, f"{param}: {first['msg']}"


def _document(raw: str, limits: IntakeLimits) -> dict[str, Any]:
    try:
        document = load_json(raw, limits.max_json_depth, what="the line")
    except InvalidJson as error:
        raise LineProblem("invalid_json_line", error.message) from None
    if not isinstance(document, dict):
        raise LineProblem("invalid_json_line", "each line must be a JSON object")
    # Checked first and everywhere in the line, keys included: every later message may
    # quote the line's text, and the batch's error records are stored.
    for path, reason in unstorable_paths(document):
        raise LineProblem("invalid_request", f"{path}: {reason}", path)
    return document


def _parse_line(
    raw: str, line: int, endpoint: str, limits: IntakeLimits, first_line_of: dict[str, int]
) -> BatchLine:
    document = _document(raw, limits)
    custom_id = document.get("custom_id")
    if custom_id is None:
        raise LineProblem("missing_required_parameter", "custom_id is required", "custom_id")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID_CHARS:
        raise LineProblem("invalid_custom_id",
                          f"custom_id must be a string of 1 to {MAX_CUSTOM_ID_CHARS} characters",
                          "custom_id")
    if custom_id in first_line_of:
        raise LineProblem("duplicate_custom_id",
                          f"custom_id {custom_id!r} was already used on line "
                          f"{first_line_of[custom_id]}", "custom_id")
    first_line_of[custom_id] = line
    if document.get("method") != "POST":
        raise LineProblem("invalid_method",
                          f"method must be POST, not {document.get('method')!r}", "method")
    url = document.get("url")
    if url not in KNOWN_ENDPOINTS:
        raise LineProblem("invalid_url", f"url {url!r} is not a batch endpoint", "url")
    if url != endpoint:
        raise LineProblem("mismatched_endpoint",
                          f"url {url!r} differs from the batch's endpoint {endpoint!r}; "
                          "a batch runs one endpoint", "url")
    body = document.get("body")
    if not isinstance(body, dict):
        raise LineProblem("invalid_request", "body must be a JSON object", "body")
    if url == EMBEDDINGS_ENDPOINT:
        embedding = parse_embedding_body(body, custom_id, limits)
        return BatchLine(line=line, custom_id=custom_id, model=embedding.model,
                         request=embedding)
    try:
        request = JobRequest.model_validate(
            {**_job_payload(url, body), "custom_id": custom_id})
    except ValidationError as error:
        param, message = _schema_param(error)
        raise LineProblem("invalid_request", message, param) from None
    try:
        model = resolve_model(request, limits)
    except PennyError as error:
        raise LineProblem(error.code, error.message,
                          f"body.{error.param}" if error.param else "body") from None
    return BatchLine(line=line, custom_id=custom_id, model=model, request=request)


def _numbered_lines(text: str) -> Iterator[tuple[int, str]]:
    # Split on "\n" only: JSON allows U+2028 raw inside strings (see intake.files).
    for line_no, raw_line in enumerate(text.split("\n"), start=1):
        raw = raw_line.removesuffix("\r")
        if raw.strip():
            yield line_no, raw


def parse_batch_file(
    data: bytes, endpoint: str, limits: IntakeLimits, max_requests: int
) -> BatchInput:
    """Every line of an OpenAI batch input file, validated; errors name their line (1-based)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        return BatchInput([], [BatchLineError(None, "invalid_file",
                                              f"the file is not UTF-8 text (byte {error.start})")])
    lines: list[BatchLine] = []
    errors: list[BatchLineError] = []
    first_line_of: dict[str, int] = {}
    count = 0
    for line_no, raw in _numbered_lines(text):
        count += 1
        if count > max_requests:
            errors.append(BatchLineError(
                line_no, "too_many_requests",
                f"the file holds more than {max_requests} requests, the limit per batch"))
            break
        try:
            lines.append(_parse_line(raw, line_no, endpoint, limits, first_line_of))
        except LineProblem as problem:
            errors.append(BatchLineError(line_no, problem.code, problem.message, problem.param))
    if count == 0:
        errors.append(BatchLineError(None, "empty_file", "the input file holds no requests"))
    return BatchInput(lines, errors)
