"""`penny_cache`: the exact result cache option as it rides in a hosted-API request body
(OpenAI batch lines, Anthropic batch params). The SDKs send it through `extra_body`; the
native API's field of the same meaning is `cache`. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cache.keys import CacheMode, parse_cache_mode
from intake.line_problem import LineProblem

PENNY_CACHE_FIELD = "penny_cache"


def line_cache_mode(body: Mapping[str, Any]) -> CacheMode:
    """The line's cache mode (`on` when absent); a bad value is a LineProblem naming it."""
    raw = body.get(PENNY_CACHE_FIELD)
    if raw is None:
        return CacheMode.ON
    try:
        return parse_cache_mode(raw)
    except ValueError as error:
        raise LineProblem("invalid_request", f"{PENNY_CACHE_FIELD} {error}",
                          f"body.{PENNY_CACHE_FIELD}") from None
