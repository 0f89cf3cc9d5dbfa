"""OpenTelemetry traces across intake → coalescer → worker, off unless configured.

A job crosses three processes and waits in Postgres between them, so one trace cannot
follow it as parent and child all the way. What penny records instead:

- intake: a server span per HTTP request, continuing the client's W3C `traceparent` if it
  sent one; the submission row keeps that span's `traceparent`;
- coalescer: a span per batch it cuts, *linked* to the traceparent of every submission
  whose jobs it holds (a batch gathers jobs of many requests, so many parents); the batch
  row keeps this span's `traceparent`;
- worker: a span per batch it runs, child of the coalescer's batch span and linked to the
  same submissions.

So from any intake request a trace viewer reaches the batches that ran its jobs (by
link), and from a batch every request it served.

Off (the default) nothing here creates a span, reads a header or writes a column: every
entry point returns at the first check of a tracer that is None.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Link, Span, SpanContext, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from penny.errors import MissingCapability
from penny.settings import Settings

TRACEPARENT = "traceparent"
_PROPAGATOR = TraceContextTextMapPropagator()


class _Installed:
    """What this process records spans through; both None while tracing is off."""

    tracer: trace.Tracer | None = None
    provider: TracerProvider | None = None


_installed = _Installed()


def exporter_name(settings: Settings) -> str:
    """`PENNY_TRACES_EXPORTER`, else the standard `OTEL_TRACES_EXPORTER` when set, else
    none. `OTEL_SDK_DISABLED=true` turns tracing off whatever either says."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return "none"
    chosen = settings.traces_exporter or os.environ.get("OTEL_TRACES_EXPORTER") or "none"
    return chosen.strip().lower()


def configure_tracing(settings: Settings, role: str) -> None:
    """Start exporting this process's spans, if tracing is configured. The exporter's
    endpoint, headers, timeouts and the sampler come from the standard `OTEL_*`
    variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_TRACES_SAMPLER`, ...)."""
    name = exporter_name(settings)
    if name == "none":
        return
    attributes: dict[str, str] = {"penny.role": role}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = "penny"
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    install(provider)


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter,
            )
        except ImportError as error:
            raise MissingCapability(
                "traces exporter `otlp` needs the OTLP exporter: install penny with the "
                "`otlp` extra (opentelemetry-exporter-otlp-proto-http), or set "
                "PENNY_TRACES_EXPORTER=none") from error
        return OTLPSpanExporter()
    raise MissingCapability(
        f"unknown traces exporter {name!r}: set PENNY_TRACES_EXPORTER (or "
        "OTEL_TRACES_EXPORTER) to otlp, console or none")


def install(provider: TracerProvider) -> None:
    """Record penny's spans through `provider` (what `configure_tracing` builds; a test
    passes one with an in-memory exporter). penny keeps its own provider rather than the
    global one, which can be set only once per process."""
    _installed.provider = provider
    _installed.tracer = provider.get_tracer("penny")


def uninstall() -> None:
    """Stop recording: flush what was recorded, and go back to creating nothing."""
    if _installed.provider is not None:
        _installed.provider.force_flush()
    _installed.tracer, _installed.provider = None, None


def enabled() -> bool:
    return _installed.tracer is not None


def current_traceparent() -> str | None:
    """The W3C traceparent of the span active here, to store beside what it made; None
    with tracing off or outside any span."""
    if _installed.tracer is None:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT)


def _context_of(traceparent: str) -> SpanContext | None:
    context = trace.get_current_span(_PROPAGATOR.extract({TRACEPARENT: traceparent}))
    span_context = context.get_span_context()
    return span_context if span_context.is_valid else None


def _links(traceparents: Iterable[str | None]) -> list[Link]:
    contexts = (_context_of(tp) for tp in sorted({tp for tp in traceparents if tp}))
    return [Link(context) for context in contexts if context is not None]


def _traceparent_of(span: Span) -> str:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier[TRACEPARENT]


@contextmanager
def request_span(method: str, headers: Mapping[str, str]) -> Iterator[Span | None]:
    """A server span for one intake request, continuing the client's trace when its
    headers carry one; active inside the block. None (and no span) with tracing off."""
    tracer = _installed.tracer
    if tracer is None:
        yield None
        return
    parent: Context = _PROPAGATOR.extract(headers)
    with tracer.start_as_current_span(f"{method} intake", context=parent,
                                       kind=SpanKind.SERVER) as span:
        yield span


def start_batch_span(model: str, jobs: int,
                     traceparents: Iterable[str | None]) -> tuple[Span, str] | None:
    """The coalescer's span for a batch it cut, linked to the traceparents of the
    submissions its jobs came from; with the traceparent to store on the batch row. The
    caller ends it. None with tracing off."""
    tracer = _installed.tracer
    if tracer is None:
        return None
    span = tracer.start_span("coalescer batch", context=Context(), links=_links(traceparents),
                              attributes={"penny.model": model, "penny.batch.jobs": jobs})
    return span, _traceparent_of(span)


@contextmanager
def worker_span(batch_id: str, model: str, batch_traceparent: str | None,
                traceparents: Iterable[str | None]) -> Iterator[Span | None]:
    """The worker's span for running one batch: child of the coalescer's batch span
    (`batch_traceparent`), linked to the submissions' traceparents. Nothing with tracing
    off."""
    tracer = _installed.tracer
    if tracer is None:
        yield None
        return
    parent = (_PROPAGATOR.extract({TRACEPARENT: batch_traceparent}) if batch_traceparent
              else Context())
    with tracer.start_as_current_span(
            "worker execute", context=parent, links=_links(traceparents),
            attributes={"penny.batch_id": batch_id, "penny.model": model}) as span:
        yield span
