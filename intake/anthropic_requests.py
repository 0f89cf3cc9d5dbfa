"""Anthropic Message Batches: `requests[]` of `{custom_id, params}` become job requests. Pure.

The shape of the list (ids present, unique, well-formed, all text storable) is checked up
front and rejects the whole request, as the hosted API does; a request whose `params` are
bad still gets a line of its own and ends `errored`, so one bad request never sinks the
batch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from cache.keys import parse_cache_mode
from intake.cache_option import PENNY_CACHE_FIELD
from intake.compress_option import PENNY_COMPRESS_FIELD
from intake.files import describe_validation_error
from intake.limits import IntakeLimits, resolve_model
from intake.schema import JobRequest
from intake.text import unstorable_paths
from penny.errors import InvalidRequest, PennyError

_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# penny's extension: the request's tags (the hosted API's `metadata` holds only `user_id`,
# and changes nothing here), as a native job's `metadata`: its feature, its tag policies.
PENNY_METADATA_FIELD = "penny_metadata"
_PARAMS = frozenset({"model", "max_tokens", "messages", "system", "temperature", "top_p",
                     "stop_sequences", "metadata", "stream", "service_tier",
                     "output_config", PENNY_CACHE_FIELD, PENNY_COMPRESS_FIELD,
                     PENNY_METADATA_FIELD})


def _response_format(output_config: Any) -> dict[str, Any] | None:
    """`output_config: {format: {type: "json_schema", schema}}`, Anthropic's structured
    outputs, as the job's `response_format`; `effort` has no meaning for these models."""
    if output_config is None:
        return None
    if not isinstance(output_config, dict):
        raise ValueError("params.output_config: must be an object")
    unknown = sorted(k for k, v in output_config.items() if k != "format" and v is not None)
    if unknown:
        raise ValueError(f"params.output_config.{unknown[0]}: not served here")
    output_format = output_config.get("format")
    if output_format is None:
        return None
    if not isinstance(output_format, dict) or output_format.get("type") != "json_schema":
        raise ValueError("params.output_config.format: only {type: 'json_schema', schema} "
                         "is served here")
    extra = sorted(set(output_format) - {"type", "schema"})
    if extra:
        raise ValueError(f"params.output_config.format.{extra[0]}: not served here")
    return {"type": "json_schema",
            "json_schema": {"name": "output", "schema": output_format.get("schema")}}


@dataclass(frozen=True)
class AnthropicRequest:
    index: int
    custom_id: str
    model: str
    request: JobRequest | None  # None: the params are bad, see `error`
    error: dict[str, Any] | None = None


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        for b in content
    ):
        return "".join(b["text"] for b in content)
    raise ValueError(f"{where}: only text content is served here")


def _payload(params: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(params) - _PARAMS)
    if unknown:
        raise ValueError(f"params.{unknown[0]}: not served here")
    if params.get("stream"):
        raise ValueError("params.stream: batches do not stream")
    if "max_tokens" not in params:
        raise ValueError("params.max_tokens: field required")
    raw_messages = params.get("messages")
    if not isinstance(raw_messages, list):
        raise ValueError("params.messages: must be a list")
    messages = []
    if params.get("system") is not None:
        messages.append({"role": "system", "content": _text(params["system"], "params.system")})
    for index, message in enumerate(raw_messages):
        where = f"params.messages.{index}"
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise ValueError(f"{where}.role: must be 'user' or 'assistant'")
        messages.append({"role": message["role"],
                         "content": _text(message.get("content"), f"{where}.content")})
    payload: dict[str, Any] = {"messages": messages, "max_tokens": params["max_tokens"]}
    for key in ("model", "temperature", "top_p"):
        if params.get(key) is not None:
            payload[key] = params[key]
    if params.get("stop_sequences"):
        payload["stop"] = params["stop_sequences"]
    response_format = _response_format(params.get("output_config"))
    if response_format is not None:
        payload["response_format"] = response_format
    return {**payload, **_extensions(params)}


def _extensions(params: dict[str, Any]) -> dict[str, Any]:
    """penny's extensions in a request's params, as job fields."""
    fields: dict[str, Any] = {}
    if params.get(PENNY_CACHE_FIELD) is not None:
        fields["cache"] = _cache_mode(params[PENNY_CACHE_FIELD])
    if params.get(PENNY_COMPRESS_FIELD) is not None:
        fields["compress"] = params[PENNY_COMPRESS_FIELD]
    if params.get(PENNY_METADATA_FIELD) is not None:
        fields["metadata"] = params[PENNY_METADATA_FIELD]
    return fields


def _cache_mode(value: Any) -> str:
    """penny's `penny_cache` extension in a request's params, as the job's `cache`."""
    try:
        return parse_cache_mode(value)
    except ValueError as error:
        raise ValueError(f"params.{PENNY_CACHE_FIELD}: {error}") from None


def _one(index: int, custom_id: str, params: Any, limits: IntakeLimits) -> AnthropicRequest:
    model = limits.default_model
    if isinstance(params, dict) and isinstance(params.get("model"), str):
        model = params["model"]
    try:
        if not isinstance(params, dict):
            raise ValueError("params: must be an object")
        request = JobRequest.model_validate({**_payload(params), "custom_id": custom_id})
        model = resolve_model(request, limits)
    except ValidationError as error:
        # The job fields a schema error names as this request calls them: output_config,
        # penny_compress, penny_metadata.
        message = re.sub(r"(^|; )compress\b", rf"\1{PENNY_COMPRESS_FIELD}",
                         describe_validation_error(error).replace(
                             "response_format.json_schema.schema",
                             "output_config.format.schema"))
        message = re.sub(r"(^|; )metadata\b", rf"\1{PENNY_METADATA_FIELD}", message)
        return AnthropicRequest(index, custom_id, model, None,
                                {"code": "invalid_request", "message": f"params: {message}"})
    except ValueError as error:
        return AnthropicRequest(index, custom_id, model, None,
                                {"code": "invalid_request", "message": str(error)})
    except PennyError as error:
        return AnthropicRequest(index, custom_id, model, None,
                                {"code": error.code, "message": error.message})
    return AnthropicRequest(index, custom_id, model, request)


def parse_requests(
    requests: Sequence[Any], limits: IntakeLimits, max_requests: int
) -> list[AnthropicRequest]:
    if not requests:
        raise InvalidRequest("requests: at least one request is needed", param="requests")
    if len(requests) > max_requests:
        raise InvalidRequest(f"{len(requests)} requests; the limit per batch is {max_requests}",
                             param="requests")
    problems: list[dict[str, object]] = []
    seen: set[str] = set()
    for index, item in enumerate(requests):
        custom_id = item.get("custom_id") if isinstance(item, dict) else None
        if not isinstance(custom_id, str) or not _CUSTOM_ID.match(custom_id):
            problems.append({"index": index, "param": f"requests.{index}.custom_id",
                             "message": "custom_id must match ^[a-zA-Z0-9_-]{1,64}$"})
        elif custom_id in seen:
            problems.append({"index": index, "param": f"requests.{index}.custom_id",
                             "message": f"duplicate custom_id {custom_id!r}"})
        else:
            seen.add(custom_id)
        # Text Postgres cannot hold rejects the request as a whole, like a bad custom_id:
        # a request's own error record would otherwise have to quote it.
        problems.extend({"index": index, "param": f"requests.{path}", "message": reason}
                        for path, reason in unstorable_paths(item, str(index)))
    if problems:
        first = problems[0]
        raise InvalidRequest(f"{first['param']}: {first['message']}", param=str(first["param"]),
                             details=problems)
    return [_one(i, item["custom_id"], item.get("params"), limits)
            for i, item in enumerate(requests)]
