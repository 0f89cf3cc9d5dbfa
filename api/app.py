"""The FastAPI app factory. The API never imports vLLM or torch: it only writes job rows."""

from __future__ import annotations

from fastapi import FastAPI

from api import health, jobs
from api.errors import install_error_handlers
from api.limits import BodySizeLimit
from intake.limits import IntakeLimits
from penny.runtime import Runtime


def create_app(runtime: Runtime) -> FastAPI:
    settings = runtime.settings
    app = FastAPI(title="penny", version="0.1.0")
    app.state.settings = settings
    app.state.sessions = runtime.sessions
    app.state.intake_limits = IntakeLimits.from_settings(settings)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    return app
