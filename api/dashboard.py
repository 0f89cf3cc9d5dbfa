"""The dashboard (`GET /dashboard`): one static page, its script and stylesheet, served
from `api/dashboard_static`. Nothing is fetched from elsewhere and nothing is built: the
page asks for an API key, keeps it in the tab's session storage, and draws its charts (by
hand, in SVG) from the report API, so it sees exactly what that key may see."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from api.errors import error_responses

STATIC = Path(__file__).parent / "dashboard_static"
_TYPES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
# The page runs only its own script and talks only to this server.
_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                       "frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}

router = APIRouter(responses=error_responses(404))


@router.get("/dashboard", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=_HEADERS)


@router.get("/dashboard/dashboard.js", include_in_schema=False)
def script() -> FileResponse:
    return FileResponse(STATIC / "dashboard.js", media_type=_TYPES["dashboard.js"],
                        headers=_HEADERS)


@router.get("/dashboard/dashboard.css", include_in_schema=False)
def stylesheet() -> FileResponse:
    return FileResponse(STATIC / "dashboard.css", media_type=_TYPES["dashboard.css"],
                        headers=_HEADERS)
