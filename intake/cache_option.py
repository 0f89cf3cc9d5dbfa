"""A job's cache mode: as it asked (natively the job's `cache`; in hosted-API request
bodies, OpenAI batch lines and Anthropic batch params, the `penny_cache` extension the SDKs
send through `extra_body`), else the deployment's per-tag opt-in (`tag_cache`), else `on`.
Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cache.keys import CacheMode, parse_cache_mode
from intake.line_problem import LineProblem
from intake.schema import JobRequest
from routing.policy import tag_matches

PENNY_CACHE_FIELD = "penny_cache"


@dataclass(frozen=True)
class TagCache:
    """A deployment's cache mode for one metadata tag (`key` or `key=value`, as the routing
    policy writes tags): its jobs that say nothing about the cache run with it."""

    tag: str
    mode: CacheMode


def tag_caches(policies: Mapping[str, CacheMode]) -> tuple[TagCache, ...]:
    """The policies in declared order."""
    return tuple(TagCache(tag, CacheMode(mode)) for tag, mode in policies.items())


def cache_mode_for(asked: CacheMode | None, metadata: Mapping[str, Any],
                   policies: Sequence[TagCache]) -> CacheMode:
    """What a job uses the caches with: what it (or its submission) asked for, else the
    first policy whose tag it carries, else `on`."""
    if asked is not None:
        return asked
    return next((p.mode for p in policies if tag_matches(p.tag, metadata)), CacheMode.ON)


def asked_cache_mode(request: JobRequest) -> CacheMode | None:
    """The job's `cache` if it (or its submission) named one, else None: the field's
    default `on` is what a job gets when no tag policy matches either."""
    return request.cache if "cache" in request.model_fields_set else None


def line_cache_mode(body: Mapping[str, Any]) -> CacheMode | None:
    """The line's cache mode (None when it names none); a bad value is a LineProblem naming
    it."""
    raw = body.get(PENNY_CACHE_FIELD)
    if raw is None:
        return None
    try:
        return parse_cache_mode(raw)
    except ValueError as error:
        raise LineProblem("invalid_request", f"{PENNY_CACHE_FIELD} {error}",
                          f"body.{PENNY_CACHE_FIELD}") from None
