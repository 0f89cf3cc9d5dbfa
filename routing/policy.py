"""Per-tag routing policy: a job that names no model but carries a metadata tag is sent
where the deployment's policy for that tag says (a tier, `auto` or `cascade`).

A tag is written `key` (the job has that metadata key, whatever its value) or
`key=value` (the key with that value: a string as is, anything else as its JSON text).
Policies are tried in the order they are declared; the first that matches wins. A job
that names its model is never rerouted: the client's choice stands.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def tag_matches(tag: str, metadata: Mapping[str, Any]) -> bool:
    """Whether a job's metadata carries `tag` (`key`, or `key=value`)."""
    key, separator, value = tag.partition("=")
    if key not in metadata:
        return False
    if not separator:
        return True
    held = metadata[key]
    return (held if isinstance(held, str) else json.dumps(held)) == value


@dataclass(frozen=True)
class TagRoute:
    tag: str  # `key` or `key=value`
    target: str  # a tier, `auto` or `cascade`

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        return tag_matches(self.tag, metadata)


def tag_routes(policies: Mapping[str, str]) -> tuple[TagRoute, ...]:
    """The policies in declared order."""
    return tuple(TagRoute(tag, target) for tag, target in policies.items())


def matching_route(metadata: Mapping[str, Any], routes: Sequence[TagRoute]
                   ) -> TagRoute | None:
    return next((route for route in routes if route.matches(metadata)), None)


def requested_model(model: str | None, metadata: Mapping[str, Any], default_model: str,
                    routes: Sequence[TagRoute]) -> tuple[str, TagRoute | None]:
    """The model a job asks for, and the policy that chose it (None: the job named it, or
    no policy matched and it takes the default)."""
    if model is not None:
        return model, None
    route = matching_route(metadata, routes)
    if route is not None:
        return route.target, route
    return default_model, None
