"""`GET /metrics` for Prometheus, and the middleware that counts every HTTP request by
its route template (`/v1/jobs/{job_id}`, never the raw path: one series per route, not
one per job)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from observability import metrics

router = APIRouter(tags=["metrics"])
UNMATCHED = "unmatched"  # a path no route serves (a 404): one label for all of them


@router.get("/metrics", include_in_schema=False)
def scrape(request: Request) -> Response:
    body = metrics.exposition([request.app.state.queue_metrics])
    return Response(body, media_type=metrics.CONTENT_TYPE)


class RequestMetrics:
    """Pure ASGI (no BaseHTTPMiddleware): streamed bodies pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

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
        try:
            await self.app(scope, receive, send_and_note)
        finally:
            # The router writes the matched route into the scope it was given.
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = str(scope["method"])
            metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
            metrics.HTTP_SECONDS.labels(method, route).observe(time.perf_counter() - started)
