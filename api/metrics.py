"""`GET /metrics` for Prometheus. Requests are counted by `api.request_observation`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from observability import metrics

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
def scrape(request: Request) -> Response:
    body = metrics.exposition([request.app.state.queue_metrics])
    return Response(body, media_type=metrics.CONTENT_TYPE)
