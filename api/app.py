"""The FastAPI app factory. The API never imports vLLM or torch: it only writes job rows."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import FastAPI

from api import admin, anthropic_batches, health, jobs, openai_batches, openai_files
from api.auth import TenantResolver
from api.errors import install_error_handlers
from api.limits import BodySizeLimit
from intake.admission import IntakePolicy
from intake.limits import IntakeLimits
from penny.runtime import Runtime
from tenancy.keys import AdminKeys


def create_app(runtime: Runtime) -> FastAPI:
    settings = runtime.settings
    app = FastAPI(title="penny", version="0.1.0")
    app.state.settings = settings
    app.state.sessions = runtime.sessions
    app.state.intake_limits = IntakeLimits.from_settings(settings)
    app.state.intake_policy = IntakePolicy.from_settings(settings)
    app.state.tenants = TenantResolver(settings, runtime.sessions)
    app.state.admin_keys = AdminKeys(settings.admin_api_keys)
    app.state.store = runtime.store
    app.state.started_at = datetime.now(UTC)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(openai_files.router)
    app.include_router(openai_batches.router)
    app.include_router(anthropic_batches.router)
    app.include_router(admin.router)
    upload_limit = settings.max_file_bytes + openai_files.MULTIPART_SLACK_BYTES
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes,
                       path_limits={"/v1/files": upload_limit,
                                    "/v1/messages/batches": settings.max_file_bytes})
    return app
