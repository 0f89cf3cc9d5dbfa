"""The one wrapper every request passes: counted by route template and status (a raising
app counts as the 500 the client gets), timed, and passed through untouched."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY
from starlette.types import Message, Receive, Scope, Send

from api.request_observation import UNMATCHED, RequestObservation


class _Route:
    def __init__(self, path: str) -> None:
        self.path = path


def counted(method: str, route: str, status: str) -> float:
    return REGISTRY.get_sample_value(
        "penny_http_requests_total", {"method": method, "route": route, "status": status}
    ) or 0.0


def timed(method: str, route: str) -> float:
    return REGISTRY.get_sample_value(
        "penny_http_request_seconds_count", {"method": method, "route": route}) or 0.0


def app_answering(status: int, route: str | None, body: bytes = b"ok") -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if route is not None:
            scope["route"] = _Route(route)  # what the router writes into the scope
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


def call(app: Any, method: str = "GET", scope_type: str = "http") -> list[Message]:
    """One request through `app` (observed here unless it is a RequestObservation)."""
    observed = app if isinstance(app, RequestObservation) else RequestObservation(app)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": scope_type, "method": method, "path": "/x", "headers": []}
    asyncio.run(observed(scope, receive, send))
    return sent


def test_each_request_is_counted_by_route_template_and_status() -> None:
    route = "/v1/test-observation/{item_id}"
    before = (counted("GET", route, "200"), counted("POST", route, "404"), timed("GET", route))
    observed = RequestObservation(app_answering(200, route))
    for _ in range(3):  # the same series again: counted on the children it kept
        sent = call(observed)
        assert [(m["type"], m.get("status", m.get("body"))) for m in sent] == [
            ("http.response.start", 200), ("http.response.body", b"ok")]
    call(app_answering(404, route), method="POST")
    assert counted("GET", route, "200") == before[0] + 3
    assert counted("POST", route, "404") == before[1] + 1
    assert timed("GET", route) == before[2] + 3


def test_a_path_no_route_serves_is_one_series() -> None:
    before = counted("GET", UNMATCHED, "404")
    call(app_answering(404, None))
    assert counted("GET", UNMATCHED, "404") == before + 1


def test_an_app_that_raises_before_answering_counts_as_a_500() -> None:
    route = "/v1/test-observation/raises"

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = _Route(route)
        raise RuntimeError("boom")

    before = counted("GET", route, "500")
    with pytest.raises(RuntimeError):
        call(app)
    assert counted("GET", route, "500") == before + 1


def test_other_scopes_pass_through_uncounted() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    before = counted("GET", UNMATCHED, "500")
    call(app, scope_type="lifespan")
    assert seen == ["lifespan"]
    assert counted("GET", UNMATCHED, "500") == before
