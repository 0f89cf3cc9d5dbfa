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
from hypothesis import HealthCheck, Phase, given, settings
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
from sqlalchemy import text

from api.app import create_app
from models.workers import heartbeat
from penny.runtime import Runtime, open_runtime
from tests.support import make_settings, reset_tables

# Bounded for CI: examples per operation and generation mode.
MAX_EXAMPLES = 25
HEADERS = {"Authorization": "Bearer key-fuzz"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, negative_data_rejection]


@pytest.fixture
def fuzz_runtime(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    runtime = open_runtime(make_settings(tmp_path, database_url,
                                         api_keys={"key-fuzz": "fuzz"},
                                         admin_api_keys=["key-fuzz"],
                                         worker_heartbeat_seconds=3600.0))
    yield runtime
    runtime.close()


# What API calls create; tenants and keys stay (the app caches who a key is).
WORK_TABLES = ("ledger_entries", "results", "jobs", "batches", "files", "submissions",
               "result_cache", "semantic_cache_counters")


def fresh_tables(runtime: Runtime) -> None:
    """Empty tables, and a worker for every served model heard from recently enough for
    the whole run, so /readyz answers 200 as a deployment with its workers up does."""
    reset_tables(runtime)
    with runtime.sessions() as session:
        for model in runtime.settings.served_models:
            heartbeat(session, f"fuzz-{model}", model)


def fresh_work(runtime: Runtime) -> None:
    with runtime.db.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(WORK_TABLES)} CASCADE"))


@pytest.fixture
def api_schema(fuzz_runtime: Runtime) -> Any:
    fresh_tables(fuzz_runtime)
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(fuzz_runtime))


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


# Stateful runs: scenarios of up to this many calls each, following the schema's links.
STATEFUL_SCENARIOS = 20
STATEFUL_STEPS = 6
# Reads that can only answer 200 with an id an earlier call created.
LINKED_READS = {"GET /v1/jobs/{job_id}", "GET /v1/submissions/{submission_id}",
                "GET /v1/files/{file_id}", "GET /v1/files/{file_id}/content",
                "GET /v1/messages/batches/{message_batch_id}",
                "GET /v1/messages/batches/{message_batch_id}/results"}
CHAT = {"messages": [{"role": "user", "content": "What is 2 + 2?"}], "max_tokens": 8}
# Random bodies almost never make a valid create (the stateless test fuzzes those): every
# other create in a scenario sends one of these, so the links have ids to follow.
VALID_CREATES: dict[str, Any] = {
    "POST /v1/jobs": CHAT,
    "POST /v1/jobs/bulk": {"jobs": [CHAT, {**CHAT, "custom_id": "second"}]},
    "POST /v1/messages/batches": {"requests": [{"custom_id": "a", "params": CHAT}]},
    "POST /v1/files": {"purpose": "batch", "file": b'{"custom_id": "a", "method": "POST", '
                       b'"url": "/v1/chat/completions", "body": {"max_tokens": 8, '
                       b'"messages": [{"role": "user", "content": "hi"}]}}\n'},
    "POST /v1/uploads/csv": {"file": b"custom_id,prompt\nr1,What is 2 + 2?\n"},
    "POST /v1/uploads/jsonl": {"file": b'{"prompt": "What is 2 + 2?", "max_tokens": 8}\n'},
}


def test_linked_calls_answer_within_their_schema(api_schema: Any, fuzz_runtime: Runtime
                                                 ) -> None:
    """Create something, then use its id: scenarios chained by penny's OpenAPI links
    (create a job, read it and its submission; upload a file, read and delete it; ...)."""
    # Only the links penny declares: schemathesis' own guesses would link ids by name.
    api_schema.config.phases.stateful.inference.algorithms = []
    read_back: set[str] = set()

    class Linked(api_schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            # Each scenario starts from empty tables: what one left (an Idempotency-Key,
            # a queued job) must not change what the next one's calls answer, or
            # hypothesis sees the same choices lead to different scenarios.
            fresh_work(fuzz_runtime)
            self.creates = 0

        def before_call(self, case: Any) -> None:
            valid = VALID_CREATES.get(case.operation.label)
            if valid is not None:
                self.creates += 1
                if self.creates % 2:
                    case.body = valid

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": HEADERS}

        def after_call(self, response: Any, case: Any) -> None:
            if response.status_code == 200 and case.operation.label in LINKED_READS:
                read_back.add(case.operation.label)

        def validate_response(self, response: Any, case: Any,
                              additional_checks: Any = None, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs or None)

    Linked.run(settings=settings(max_examples=STATEFUL_SCENARIOS,
                                 stateful_step_count=STATEFUL_STEPS, deadline=None,
                                 database=None, derandomize=True,
                                 # A failing scenario is reported as found: shrinking
                                 # replays it against a database its first run changed.
                                 phases=[Phase.generate],
                                 suppress_health_check=list(HealthCheck)))
    # The links were followed: objects only a create makes were read back by their ids.
    # Which other reads a run reaches depends on the scenarios the seed draws (the seed
    # changes with the state machine's code): a job and its submission are the ones every
    # seed tried reaches. (The valid file create's bytes go out as a text field, not a file
    # part, so the file links are never followed here.)
    assert {"GET /v1/jobs/{job_id}", "GET /v1/submissions/{submission_id}"} <= read_back, \
        read_back
