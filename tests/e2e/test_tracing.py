"""OpenTelemetry traces across intake → coalescer → worker. One embeddings batch posted
over real HTTP with a client's W3C traceparent, run by the embedded pipeline (the
coalescer and a real sentence-transformers worker in-process, no vLLM); the spans are
read from the SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import select

from api.app import create_app
from models.tables import Batch, Submission
from observability import tracing
from penny.runtime import Runtime
from penny.settings import OFFLINE_EMBEDDING_MODEL_NAME
from tests.support import LiveServer, jsonl, openai_sdk, wait_until
from workers.inprocess import InProcessPipeline
from workers.sentence_embedder import SentenceTransformerEmbedder

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
CLIENT_TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
LINE = {"custom_id": "one", "method": "POST", "url": "/v1/embeddings",
        "body": {"model": OFFLINE_EMBEDDING_MODEL_NAME, "input": "Paris is in France."}}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.uninstall()
    provider.shutdown()


def run_one_batch(runtime: Runtime, embedder: SentenceTransformerEmbedder) -> str:
    """Upload one embeddings line, create its batch with the client's traceparent, run it
    to completion; the batch id."""
    with LiveServer(create_app(runtime)) as server:
        client = openai_sdk(server)
        upload = client.files.create(file=("embed.jsonl", jsonl([LINE])), purpose="batch")
        batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/embeddings",
                                      completion_window="24h",
                                      extra_headers={"traceparent": CLIENT_TRACEPARENT})
        with InProcessPipeline(runtime, [], [embedder]):
            wait_until(lambda: client.batches.retrieve(batch.id).status == "completed",
                       timeout=120, what="the batch to complete", interval=0.3)
        return batch.id


def only(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    named = [span for span in spans if span.name == name]
    assert len(named) == 1, [span.name for span in spans]
    return named[0]


def ids(span: ReadableSpan) -> tuple[int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


def ids_in(traceparent: str) -> tuple[int, int]:
    """Trace and span id of a stored W3C traceparent (`00-<trace>-<span>-<flags>`)."""
    _, trace_id, span_id, _ = traceparent.split("-")
    return int(trace_id, 16), int(span_id, 16)


def test_a_batch_request_is_traced_through_intake_coalescer_and_worker(
    spans: InMemorySpanExporter, runtime: Runtime, embedder: SentenceTransformerEmbedder
) -> None:
    run_one_batch(runtime, embedder)
    # The worker's span ends just after the batch is finalized.
    wait_until(lambda: any(s.name == "worker execute" for s in spans.get_finished_spans()),
               timeout=30, what="the worker span to end")
    finished = list(spans.get_finished_spans())

    intake = only(finished, "POST /v1/batches")
    assert intake.parent is not None
    assert (intake.parent.trace_id, intake.parent.span_id) == (int(CLIENT_TRACE, 16),
                                                               int(CLIENT_SPAN, 16))
    assert ids(intake)[0] == int(CLIENT_TRACE, 16)
    assert intake.attributes is not None and intake.attributes["http.response.status_code"] == 200

    batch = only(finished, "coalescer batch")
    assert [(link.context.trace_id, link.context.span_id) for link in batch.links] == [
        ids(intake)]
    assert batch.attributes is not None
    assert batch.attributes["penny.model"] == OFFLINE_EMBEDDING_MODEL_NAME
    assert batch.attributes["penny.batch.jobs"] == 1

    worker = only(finished, "worker execute")
    assert worker.parent is not None
    assert (worker.parent.trace_id, worker.parent.span_id) == ids(batch)
    assert [(link.context.trace_id, link.context.span_id) for link in worker.links] == [
        ids(intake)]
    assert worker.attributes is not None
    assert worker.attributes["penny.batch_id"] == batch.attributes["penny.batch_id"]

    with runtime.sessions() as session:
        stored: Any = session.execute(select(Submission.traceparent)).scalar_one()
        batch_row = session.execute(select(Batch.id, Batch.traceparent)).one()
    assert ids_in(stored) == ids(intake)
    assert ids_in(batch_row.traceparent) == ids(batch)
    assert str(batch_row.id) == batch.attributes["penny.batch_id"]

def test_with_tracing_off_nothing_is_stored(
    runtime: Runtime, embedder: SentenceTransformerEmbedder
) -> None:
    assert not tracing.enabled()
    run_one_batch(runtime, embedder)
    with runtime.sessions() as session:
        assert session.execute(select(Submission.traceparent)).scalars().all() == [None]
        assert session.execute(select(Batch.traceparent)).scalars().all() == [None]


def test_single_jobs_written_by_group_commit_keep_their_own_trace(
    spans: InMemorySpanExporter, runtime: Runtime
) -> None:
    """Single jobs are written several to a statement by the group writer: each
    submission still carries the context of the request that sent it."""
    traces = [f"{n:032x}" for n in (0xA1, 0xB2)]
    with LiveServer(create_app(runtime)) as server, httpx.Client(base_url=server.url) as http:
        submitted = {}
        for trace in traces:
            answer = http.post("/v1/jobs", json={"prompt": "Hi", "max_tokens": 4},
                               headers={"traceparent": f"00-{trace}-{CLIENT_SPAN}-01"})
            assert answer.status_code == 202, answer.text
            submitted[answer.json()["submission_id"]] = trace
    with runtime.sessions() as session:
        rows = session.execute(select(Submission.id, Submission.traceparent)).all()
    assert {str(row.id): f"{ids_in(row.traceparent)[0]:032x}" for row in rows} == submitted
    intake = [s for s in spans.get_finished_spans() if s.name == "POST /v1/jobs"]
    assert sorted(f"{s.context.trace_id:032x}" for s in intake if s.context) == traces
