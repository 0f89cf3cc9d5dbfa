"""The FastAPI app factory. The API never imports vLLM or torch: it only writes job rows."""

from __future__ import annotations

import functools
from datetime import UTC, datetime

from fastapi import FastAPI

from api import (
    admin,
    anthropic_batches,
    cache_entries,
    dashboard,
    health,
    jobs,
    metrics,
    openai_batches,
    openai_files,
    reports,
    semantic_cache_entries,
    uploads,
    webhooks,
)
from api.auth import TenantResolver
from api.errors import install_error_handlers
from api.health import HeartbeatPresence, WorkerPresence
from api.intake_caps import CapsCache
from api.limits import BodySizeLimit
from api.request_observation import RequestObservation
from cache.model_identity import cache_policy
from intake.admission import IntakePolicy
from intake.group_commit import GroupCommitWriter
from intake.limits import IntakeLimits
from observability import tracing
from observability.queue_collector import queue_registry
from penny.database import connect_async
from penny.runtime import Runtime
from storage.s3_sources import SourcePolicy
from tenancy.keys import AdminKeys


def create_app(runtime: Runtime, presence: WorkerPresence | None = None) -> FastAPI:
    """`presence` tells /readyz which models have a worker: the in-process pipeline in
    embedded mode; by default the workers' heartbeats in Postgres."""
    settings = runtime.settings
    app = FastAPI(title="penny", version="0.1.0")
    app.state.settings = settings
    app.state.sessions = runtime.sessions
    app.state.intake_limits = IntakeLimits.from_settings(settings)
    app.state.intake_policy = IntakePolicy.from_settings(settings)
    app.state.tenants = TenantResolver(settings, runtime.sessions)
    app.state.admin_keys = AdminKeys(settings.admin_api_keys)
    app.state.store = runtime.store
    app.state.s3_sources = SourcePolicy.from_config(settings.tenant_s3_sources)
    # The model identities are read once, here: intake looks jobs up under them.
    app.state.result_cache = cache_policy(settings)
    app.state.group_commit = (
        GroupCommitWriter(runtime.sessions, app.state.result_cache,
                          functools.partial(connect_async, runtime.database_url,
                                            settings.report_feature_tag))
        if settings.intake_group_commit else None)
    app.state.max_tokens_caps = CapsCache(settings, runtime.sessions)
    app.state.started_at = datetime.now(UTC)
    app.state.worker_presence = presence or HeartbeatPresence(runtime.sessions, settings)
    app.state.queue_metrics = queue_registry(runtime.sessions, settings.served_models,
                                             settings.worker_heartbeat_seconds * 3)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(jobs.router)
    app.include_router(openai_files.router)
    app.include_router(uploads.router)
    app.include_router(openai_batches.router)
    app.include_router(anthropic_batches.router)
    app.include_router(cache_entries.router)
    app.include_router(semantic_cache_entries.router)
    app.include_router(webhooks.router)
    app.include_router(admin.router)
    app.include_router(reports.router)
    app.include_router(dashboard.router)
    upload_limit = settings.max_file_bytes + openai_files.MULTIPART_SLACK_BYTES
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes,
                       path_limits={"/v1/files": upload_limit,
                                    "/v1/messages/batches": settings.max_file_bytes,
                                    "/v1/uploads/csv": settings.max_csv_upload_bytes
                                    + uploads.MULTIPART_SLACK_BYTES,
                                    "/v1/uploads/jsonl": settings.max_csv_upload_bytes
                                    + uploads.MULTIPART_SLACK_BYTES})
    # Outermost: a request the size limit refuses is counted (and traced) too.
    app.add_middleware(RequestObservation, traced=tracing.enabled())
    return app
