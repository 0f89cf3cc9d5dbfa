"""OpenAPI links: where the id a create operation answers with can be used next (create a
job, then read it). Clients and generated SDKs learn the API's flow from them, and the
schema fuzz test follows them to chain calls."""

from __future__ import annotations

from typing import Any


def link(path: str, method: str, **parameters: str) -> dict[str, Any]:
    """A link to `method path`, each parameter filled from the response (`$response...`)."""
    pointer = path.replace("~", "~0").replace("/", "~1")
    return {"operationRef": f"#/paths/{pointer}/{method}", "parameters": parameters}


def links(status: int, **named: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """The `responses` entry that adds `named` links to the `status` response."""
    return {status: {"links": named}}


def read_by_id(path: str, parameter: str, source: str = "$response.body#/id"
               ) -> dict[str, Any]:
    """A link to `GET path` with `parameter` taken from the response's `source`."""
    return link(path, "get", **{parameter: source})
