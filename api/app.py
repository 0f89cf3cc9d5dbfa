"""The FastAPI app factory. The API never imports vLLM or torch: it only writes job rows."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import FastAPI

from api import anthropic_batches, cache_entries, health, jobs, openai_batches, openai_files
from api.errors import install_error_handlers
from api.limits import BodySizeLimit
from cache.model_identity import cache_policy
from intake.limits import IntakeLimits
from penny.runtime import Runtime


def create_app(runtime: Runtime) -> FastAPI:
    settings = runtime.settings
    app = FastAPI(title="penny", version="0.1.0")
    app.state.settings = settings
    app.state.sessions = runtime.sessions
    app.state.intake_limits = IntakeLimits.from_settings(settings)
    app.state.store = runtime.store
    # The model identities are read once, here: intake looks jobs up under them.
    app.state.result_cache = cache_policy(settings)
    app.state.started_at = datetime.now(UTC)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(openai_files.router)
    app.include_router(openai_batches.router)
    app.include_router(anthropic_batches.router)
    app.include_router(cache_entries.router)
    upload_limit = settings.max_file_bytes + openai_files.MULTIPART_SLACK_BYTES
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes,
                       path_limits={"/v1/files": upload_limit,
                                    "/v1/messages/batches": settings.max_file_bytes})
    return app
