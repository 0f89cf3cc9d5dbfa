"""Single-flight: identical deterministic requests in flight together run once.

Two jobs may share one generation only if the engine would give both the same answer:
same tenant (cache isolation and billing), same model, same prompt and the same sampling
parameters, and sampling that is deterministic (greedy, or seeded). Sampled requests
without a seed are never merged: each caller asked for its own draw.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

_sorted_json = msgspec.json.Encoder(order="sorted").encode
# Where msgspec and json.dumps may write a number differently: with an exponent (msgspec
# writes "1e16", json "1e+16") or tiny (msgspec "0.00001", json "1e-05"). A number comes
# first or after ':', '[' or ','; text in a string that merely looks like one ("x:3e")
# only costs the slower encoder, and hex ids ("4e5a...") do not look like one.
_NUMBER = rb"-?(?:[0-9]+(?:\.[0-9]+)?[eE]|0\.0000)"
_FLOAT_SPELLING_FIRST = re.compile(_NUMBER)
# Searched apart from the document's first byte: a pattern that starts with a character
# class lets the regex engine skip to the separators, where `(?:^|[:\[,])` made it try
# every byte (5 µs for a typical request, twice per job, led the CSV intake profile).
_FLOAT_SPELLING_AFTER = re.compile(rb"[:\[,]" + _NUMBER)


def _may_spell_floats_apart(encoded: bytes) -> bool:
    return (_FLOAT_SPELLING_FIRST.match(encoded) is not None
            or _FLOAT_SPELLING_AFTER.search(encoded) is not None)


def canonical_json(document: Any) -> bytes:
    """`document` as `json.dumps(sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)` writes it, UTF-8 encoded: the form every key here is a digest of.
    msgspec writes the same bytes about 10x faster; where its float spelling may differ,
    or it cannot encode the document, json.dumps writes them."""
    try:
        encoded = _sorted_json(document)
    except (TypeError, ValueError, OverflowError):
        encoded = b"e"  # let json.dumps decide (and raise what it raises)
    if not _may_spell_floats_apart(encoded):
        return encoded
    return json.dumps(document, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()


def single_flight_key(tenant: str, model: str, request: Mapping[str, Any]) -> str | None:
    """A digest of everything that determines the answer, or None when the request is
    sampled without a seed. `request` is the stored engine request (prompt + sampling)."""
    keys = single_flight_keys((tenant,), model, request)
    return None if keys is None else keys[0]


def single_flight_keys(tenants: Sequence[str], model: str, request: Mapping[str, Any]
                       ) -> list[str] | None:
    """`single_flight_key(tenant, model, request)` for each of `tenants`, the request
    encoded once (the exact cache's key is the one for tenant "").

    The digest is of `canonical_json({"tenant": ..., "model": ..., "request": ...})`,
    written here from its parts: sorted, the keys come as model, request, tenant, and each
    part is encoded as it is within the whole (a part's float spelling is checked on the
    part; a separator the check looks for inside the model or tenant text is in a string,
    where both encoders write the same bytes)."""
    sampling = request.get("sampling", {})
    if float(sampling.get("temperature", 0.0)) > 0 and sampling.get("seed") is None:
        return None
    head = b'{"model":' + _json_string(model) + b',"request":' + canonical_json(request)
    return [hashlib.sha256(head + b',"tenant":' + _json_string(tenant) + b"}").hexdigest()
            for tenant in tenants]


@functools.lru_cache(maxsize=1024)
def _json_string(text: str) -> bytes:
    """A model name or tenant as `canonical_json` writes it (few distinct values)."""
    return canonical_json(text)


class Collapsible(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def single_flight_key(self) -> str | None: ...


@dataclass(frozen=True)
class Collapsed:
    leaders: list[str]  # ids of the jobs the engine must run, in the order given
    followers: dict[str, str]  # follower id -> leader id among `leaders`
    joined_in_flight: dict[str, str]  # follower id -> id of a leader already batched


def collapse(jobs: Sequence[Collapsible], in_flight: Mapping[str, str]) -> Collapsed:
    """Pick one leader per key. `jobs` come most urgent first, so the leader is the most
    urgent copy and the group runs as early as its most urgent member needs.
    `in_flight` maps keys to leaders already batched or running: a new copy joins them."""
    leaders: list[str] = []
    followers: dict[str, str] = {}
    joined: dict[str, str] = {}
    leader_by_key: dict[str, str] = {}
    for job in jobs:
        key = job.single_flight_key
        if key is None:
            leaders.append(job.id)
        elif key in in_flight:
            joined[job.id] = in_flight[key]
        elif key in leader_by_key:
            followers[job.id] = leader_by_key[key]
        else:
            leader_by_key[key] = job.id
            leaders.append(job.id)
    return Collapsed(leaders, followers, joined)
