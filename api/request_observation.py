"""What every HTTP request leaves behind: its count and duration in Prometheus by route
template (`/v1/jobs/{job_id}`, never the raw path: one series per route, not one per job)
and, with tracing on, a server span continuing the client's W3C trace context
(`traceparent` / `tracestate` headers).

One pure-ASGI wrapper does both (streamed bodies pass through untouched): it sits on
every request's path, so it wraps the app once, and with tracing off it does not even
look for trace headers.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from observability import metrics, tracing

UNMATCHED = "unmatched"  # a path no route serves (a 404): one label for all of them
# Past this many (method, route, status) series the remembered children start over: a
# client may send any method name.
_MAX_REMEMBERED = 1_000


class RequestObservation:
    def __init__(self, app: ASGIApp, *, traced: bool = False) -> None:
        self.app = app
        self.traced = traced
        # prometheus-client's `labels()` validates and locks on every call; the labelled
        # series of a (method, route, status) are looked up once and kept.
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets when the app raises before answering

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        started = time.perf_counter()
        if not self.traced:
            try:
                await self.app(scope, receive, send_and_note)
            finally:
                self._count(scope, status, time.perf_counter() - started)
            return
        method = str(scope["method"])
        headers = {key.decode("latin-1"): value.decode("latin-1")
                   for key, value in scope["headers"]
                   if key in (b"traceparent", b"tracestate")}
        with tracing.request_span(method, headers) as span:
            try:
                await self.app(scope, receive, send_and_note)
            finally:
                route = self._count(scope, status, time.perf_counter() - started)
                if span is not None:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.request.method", method)
                    span.set_attribute("http.route", route)
                    span.set_attribute("http.response.status_code", status)

    def _count(self, scope: Scope, status: int, seconds: float) -> str:
        # The router writes the matched route into the scope it was given.
        route = getattr(scope.get("route"), "path", None) or UNMATCHED
        key = (str(scope["method"]), route, status)
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= _MAX_REMEMBERED:
                self._series.clear()
            series = (metrics.HTTP_REQUESTS.labels(key[0], route, str(status)),
                      metrics.HTTP_SECONDS.labels(key[0], route))
            self._series[key] = series
        series[0].inc()
        series[1].observe(seconds)
        return route
