"""The one mapping from errors to HTTP. Every error body has the same shape:
{"type": "error", "error": {"type", "code", "message", "param", "details"}}, which both the
OpenAI and the Anthropic SDKs read."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from intake.structured import field_path
from intake.text import escape_unstorable
from penny.errors import (
    BudgetExceeded,
    IdempotencyConflict,
    InputFileError,
    InvalidJson,
    InvalidRequest,
    NotFound,
    PennyError,
    QueueFull,
    SourceNotAllowed,
    SourceUnavailable,
    StateConflict,
    TooLarge,
    Unauthorized,
    UnknownModel,
)

STATUS_BY_ERROR: dict[type[PennyError], int] = {
    InvalidJson: 400,
    InvalidRequest: 422,
    InputFileError: 422,
    UnknownModel: 404,
    NotFound: 404,
    IdempotencyConflict: 409,
    StateConflict: 409,
    TooLarge: 413,
    Unauthorized: 401,
    SourceNotAllowed: 403,
    QueueFull: 429,
    BudgetExceeded: 402,
    SourceUnavailable: 503,
}


# The error `type` the OpenAI and Anthropic SDKs expect next to penny's own `code`.
TYPE_BY_STATUS = {401: "authentication_error", 404: "not_found_error",
                  413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                  503: "api_error"}


class ErrorDetail(BaseModel):
    type: str
    code: str
    message: str
    param: str | None
    details: list[dict[str, Any]]


class ErrorBody(BaseModel):
    type: Literal["error"]
    error: ErrorDetail


_MEANING = {400: "The body is not JSON penny can read", 401: "No valid API key",
            402: "Over the tenant's hard budget",
            403: "An s3:// object outside what the tenant may have read",
            404: "No such object for this tenant",
            409: "Conflicts with the object's state or an earlier Idempotency-Key",
            413: "The body or file is too large", 422: "The request breaks a rule",
            429: "The tenant's queue is full; see Retry-After",
            503: "The object store holding the named s3:// object did not answer"}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the errors a route can answer, all in penny's error shape."""
    return {status: {"model": ErrorBody, "description": _MEANING[status]}
            for status in statuses}


def error_body(
    code: str,
    message: str,
    param: str | None = None,
    details: list[dict[str, object]] | None = None,
    status: int = 400,
) -> dict[str, object]:
    kind = TYPE_BY_STATUS.get(status, "invalid_request_error")
    # A message or param may quote the client's text; a lone surrogate in it would make
    # the answer itself unencodable.
    return {"type": "error", "error": {
        "type": kind, "code": code, "message": escape_unstorable(message),
        "param": escape_unstorable(param) if param is not None else None,
        "details": details or []}}


def _status_for(error: PennyError) -> int:
    for kind in type(error).__mro__:
        if kind in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[kind]
    return 400


async def _penny_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, PennyError)
    status = _status_for(error)
    headers = ({"Retry-After": str(error.retry_after)} if isinstance(error, QueueFull)
               else None)
    return JSONResponse(
        error_body(error.code, error.message, error.param, error.details, status),
        status_code=status, headers=headers,
    )


def _location(loc: tuple[object, ...]) -> str:
    # Drop the leading "body" FastAPI adds; what is left is the field path the client sent
    # (less the union tag pydantic inserts in `response_format`, see field_path).
    parts = [str(p) for p in field_path(tuple(p for p in loc if p != "body"))]
    return escape_unstorable(".".join(parts)) or "body"


async def _validation_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = list(error.errors())
    if any(p.get("type") == "json_invalid" for p in problems):
        detail = problems[0].get("ctx", {}).get("error", "")
        return JSONResponse(
            error_body("invalid_json", f"the request body is not valid JSON: {detail}".strip()),
            status_code=400,
        )
    details: list[dict[str, object]] = [
        {"param": _location(tuple(p["loc"])), "message": p["msg"], "type": p["type"]}
        for p in problems
    ]
    first = details[0]
    return JSONResponse(
        error_body("invalid_request", f"{first['param']}: {first['message']}",
                   str(first["param"]), details, 422),
        status_code=422,
    )


async def _http_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(
        error.status_code, "http_error")
    return JSONResponse(error_body(code, str(error.detail), status=error.status_code),
                        status_code=error.status_code,
                        headers=getattr(error, "headers", None))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(PennyError, _penny_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
