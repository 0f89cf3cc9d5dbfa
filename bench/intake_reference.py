"""The no-persistence reference for `bench/intake_load.py`: `POST /v1/jobs` and
`POST /v1/jobs/bulk` with penny's own body validation (the `JobRequest` schema and the
deployment's limits, item by item for bulk) and the same answer shapes, but nothing is
written anywhere. What penny's intake costs beyond this is the price of durability.

    uvicorn --factory bench.intake_reference:create_app --port 8100
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Body, FastAPI

from api.schemas import BulkAccepted, JobAccepted
from intake.limits import IntakeLimits
from intake.schema import JobRequest
from intake.service import jobs_for_bulk, jobs_for_requests
from penny.settings import Settings


def create_app() -> FastAPI:
    limits = IntakeLimits.from_settings(Settings())
    app = FastAPI(title="penny intake reference")

    @app.post("/v1/jobs", status_code=202)
    async def create_job(body: JobRequest) -> JobAccepted:
        jobs_for_requests([body], limits)
        return JobAccepted(id=str(uuid.uuid4()), status="queued",
                           submission_id=str(uuid.uuid4()))

    @app.post("/v1/jobs/bulk", status_code=202)
    async def create_jobs(jobs: list[Any] = Body(embed=True)) -> BulkAccepted:  # noqa: B008
        _, built = jobs_for_bulk(jobs, limits, keep_requests=False)
        return BulkAccepted(submission_id=str(uuid.uuid4()),
                            job_ids=[str(uuid.uuid4()) for _ in built], count=len(built))

    return app
