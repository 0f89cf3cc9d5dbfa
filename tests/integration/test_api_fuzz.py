"""schemathesis against penny's own OpenAPI schema, in process against the ASGI app and a
real Postgres (no engine: jobs just queue). Positive and negative examples for every
operation; the checks: no 5xx, every status and content type declared, every body
matching its declared schema, and invalid input never accepted.

Each operation is driven by its own hypothesis strategy here rather than through
`schemathesis.pytest.from_fixture`, whose plugin does not run under this pytest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from models.workers import heartbeat
from penny.runtime import open_runtime
from tests.support import make_settings, reset_tables

# Bounded for CI: examples per operation and generation mode.
MAX_EXAMPLES = 25
HEADERS = {"Authorization": "Bearer key-fuzz"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, negative_data_rejection]


@pytest.fixture
def api_schema(tmp_path: Path, database_url: str) -> Iterator[Any]:
    # A worker for every served model, heard from recently enough for the whole run, so
    # /readyz answers 200 as a deployment with its workers up does.
    runtime = open_runtime(make_settings(tmp_path, database_url,
                                         api_keys={"key-fuzz": "fuzz"},
                                         admin_api_keys=["key-fuzz"],
                                         worker_heartbeat_seconds=3600.0))
    reset_tables(runtime)
    with runtime.sessions() as session:
        for model in runtime.settings.served_models:
            heartbeat(session, f"fuzz-{model}", model)
    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(runtime))
    runtime.close()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_answers_within_its_schema(api_schema: Any, mode: GenerationMode
                                                   ) -> None:
    failures: list[str] = []
    unbreakable: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 20  # the whole API, not an empty schema
    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            case.call_and_validate(headers=HEADERS, checks=CHECKS)

        try:
            run()
        except Unsatisfiable:
            # No input breaks the schema of an operation that takes none (GET /healthz) or
            # only free-form ids (GET /v1/jobs/{job_id}: any string is a valid id to ask for).
            assert mode is GenerationMode.NEGATIVE, operation.label
            unbreakable.append(operation.label)
        except (Exception, FailureGroup) as error:  # collect every failure, report them all
            failures.append(f"{operation.label}: {error}")
    assert not failures, "\n\n".join(failures)
    bodies = {"POST /v1/jobs", "POST /v1/jobs/bulk", "POST /v1/files", "POST /v1/batches",
              "POST /v1/messages/batches", "POST /v1/admin/keys", "PUT /v1/webhooks/endpoint"}
    assert not bodies & set(unbreakable), unbreakable
