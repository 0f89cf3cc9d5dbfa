"""The intake end of penny's traces: a server span per HTTP request, continuing the
client's W3C trace context (`traceparent` / `tracestate` headers). Installed only when
tracing is on (see `observability.tracing`), so with it off a request pays nothing."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from observability import tracing

UNMATCHED = "unmatched"


class RequestTracing:
    """Pure ASGI, like `RequestMetrics`: streamed bodies pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1"): value.decode("latin-1")
                   for key, value in scope["headers"]
                   if key in (b"traceparent", b"tracestate")}
        method = str(scope["method"])
        status = 500  # what the client gets when the app raises before answering

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        with tracing.request_span(method, headers) as span:
            try:
                await self.app(scope, receive, send_and_note)
            finally:
                if span is not None:
                    # The router writes the matched route into the scope it was given.
                    route = getattr(scope.get("route"), "path", None) or UNMATCHED
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.request.method", method)
                    span.set_attribute("http.route", route)
                    span.set_attribute("http.response.status_code", status)
