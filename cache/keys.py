"""The exact result cache's key and per-job policy. Pure.

A cached answer may only be served where running the job again would give the same
answer. The key is the single-flight key of the request (served model name, the stored
request: messages or prompt exactly as sent plus every sampling parameter) joined with the
model's identity (what the served name loads: source and a fingerprint of its weights, config and
tokenizer files, chat template included; see `cache.model_identity`). Equal requests
under an equal model identity render the same chat template into the same token ids, so a
request-level key never serves a wrong answer; it can only miss where token-level equality
would have hit (two differently written requests that tokenize alike), which is the safe
side. Sampled requests without a seed have no key: each caller asked for its own draw.

The tenant is not hashed into the key: it is the entry's own column, and every lookup and
fill is scoped by it (unique on tenant and key): the intake lookup is one query on that
index with the tenant's id, which intake already holds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

from coalescer.single_flight import single_flight_key


class CacheMode(StrEnum):
    """A job's use of the exact cache."""

    ON = "on"  # answered from the cache when it can; its answer fills the cache
    OFF = "off"  # neither read nor written
    REFRESH = "refresh"  # never read: runs fresh, and its answer replaces the entry
    # As `on`, and on an exact miss a cached answer to a close enough question that passes
    # verification may serve it (`cache.semantic`); opt-in, for FAQ-style workloads.
    SEMANTIC = "semantic"


CACHE_MODES = tuple(mode.value for mode in CacheMode)


def parse_cache_mode(raw: Any) -> CacheMode:
    """A mode as a client wrote it; ValueError naming the choices otherwise."""
    if isinstance(raw, str) and raw in CACHE_MODES:
        return CacheMode(raw)
    raise ValueError(f"must be one of {', '.join(CACHE_MODES)}, not {raw!r}")


def result_cache_key(request_key: str | None, model_identity: str | None) -> str | None:
    """The cache key from a request's single-flight key and the model's identity; None
    when either is missing (a sampled request, or weights this process cannot see)."""
    if request_key is None or model_identity is None:
        return None
    return hashlib.sha256(f"{request_key}:{model_identity}".encode()).hexdigest()


@dataclass(frozen=True)
class CachePolicy:
    """Whether and under which keys jobs read and fill the exact cache, in one process.

    `identities` maps each served model name to its identity as this process sees the
    weights; a model missing from it (or mapped to None) is never cached here.
    """

    enabled: bool
    ttl: timedelta
    identities: Mapping[str, str | None] = field(default_factory=dict)

    def key(self, model: str, request: Mapping[str, Any]) -> str | None:
        """The job's cache key (within its tenant), or None when it cannot be cached."""
        if not self.enabled:
            return None
        identity = self.identities.get(model)
        if identity is None:
            return None
        # The single-flight key with the tenant left out: see the module's docstring.
        return result_cache_key(single_flight_key("", model, request), identity)

    def key_from(self, model: str, request_key: str | None) -> str | None:
        """`key(model, request)` from `request_key`, the request's single-flight key for
        tenant "" (see coalescer.single_flight.single_flight_keys), already computed."""
        if not self.enabled:
            return None
        return result_cache_key(request_key, self.identities.get(model))

    def reads(self, mode: str) -> bool:
        return self.enabled and mode in (CacheMode.ON, CacheMode.SEMANTIC)

    def writes(self, mode: str) -> bool:
        return self.enabled and mode in (CacheMode.ON, CacheMode.REFRESH, CacheMode.SEMANTIC)
