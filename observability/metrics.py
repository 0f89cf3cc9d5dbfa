"""Every Prometheus metric penny exports, defined once, and how a process exposes them.

The API, the coalescer and each worker record into these; the queue's state (jobs by
state, queue depth and age, live workers) is read from Postgres when scraped, by
`observability.queue_collector`, because Postgres is the queue.

Several processes on one host (`penny api` beside a coalescer and workers, or uvicorn
workers) share one view when every one of them starts with `PROMETHEUS_MULTIPROC_DIR`
set to the same empty directory: each writes its samples there and the API's `/metrics`
adds them up. Processes on other hosts serve their own with `--metrics-port`.

The counters are monotonic per process (Prometheus' `rate()` handles restarts); the
`_total`, `_count`, `_sum` and `_bucket` suffixes are prometheus-client's.
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Iterable, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.multiprocess import MultiProcessCollector

from models.batch_totals import BatchTotals

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
_JOB_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
_RATIO_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)

# The API.
HTTP_REQUESTS = Counter(
    "penny_http_requests", "HTTP requests answered, by route template and status.",
    ["method", "route", "status"])
HTTP_SECONDS = Histogram(
    "penny_http_request_seconds", "Time to answer an HTTP request, by route template.",
    ["method", "route"])

# The coalescer.
WINDOW_JOBS = Histogram(
    "penny_window_jobs",
    "Jobs a closing window took for one model: batched, plus copies collapsed onto them.",
    ["model"], buckets=_JOB_BUCKETS)
BATCH_JOBS = Histogram(
    "penny_batch_jobs", "Jobs the engine runs per dispatched batch.", ["model"],
    buckets=_JOB_BUCKETS)
BATCH_FILL = Histogram(
    "penny_batch_fill_ratio",
    "How full each dispatched batch is: the larger of jobs / PENNY_MAX_BATCH_JOBS and "
    "estimated tokens / PENNY_MAX_BATCH_TOKENS.",
    ["model"], buckets=_RATIO_BUCKETS)
SINGLE_FLIGHT_HITS = Counter(
    "penny_single_flight_hits",
    "Jobs parked on an identical job's generation instead of running (single-flight).",
    ["model"])
EXACT_CACHE_HITS = Counter(
    "penny_exact_cache_hits",
    "Jobs answered from the exact result cache at intake or batch validation, without the "
    "engine.", ["model"])
BATCHES_REDISPATCHED = Counter(
    "penny_batches_redispatched",
    "Batches the sweeper sent again: a worker's lease ran out or its message was lost.",
    ["model"])
BATCHES_GAVE_UP = Counter(
    "penny_batches_failed", "Batches failed after PENNY_MAX_ATTEMPTS attempts.")

# The workers.
BATCHES_RECORDED = Counter(
    "penny_batches_recorded", "Batches a worker ran and recorded.", ["model"])
ENGINE_SECONDS = Counter(
    "penny_engine_seconds", "Seconds the engine spent on recorded batches; output tokens "
    "over engine seconds is the engine's tokens/s.", ["model"])
JOBS_FINISHED = Counter(
    "penny_jobs_finished", "Jobs a recorded batch finished, by outcome (succeeded, failed).",
    ["model", "outcome"])
PROMPT_TOKENS = Counter(
    "penny_prompt_tokens", "Prompt tokens of jobs the engine ran.", ["model"])
CACHED_TOKENS = Counter(
    "penny_cached_prompt_tokens", "Prompt tokens the engine's prefix cache served; over "
    "penny_prompt_tokens it is the prefix-cache hit ratio.", ["model"])
OUTPUT_TOKENS = Counter(
    "penny_output_tokens", "Output tokens the engine generated.", ["model"])
COST_USD = Counter(
    "penny_cost_usd", "What recorded jobs cost in engine time (the ledger's cost_usd).",
    ["model"])
LIST_COST_USD = Counter(
    "penny_list_cost_usd", "What the same jobs would cost at the hosted list price (the "
    "ledger's list_cost_usd, copies included); minus penny_cost_usd it is the saving.",
    ["model"])
SINGLE_FLIGHT_SAVED_USD = Counter(
    "penny_single_flight_saved_usd", "Engine cost single-flight copies did not spend (the "
    "ledger's single_flight_saved_usd).", ["model"])
NAIVE_COST_USD = Counter(
    "penny_naive_cost_usd", "What the jobs of recorded batches would have cost the naive "
    "way (the ledger's naive_cost_usd, copies and semantic hits included).", ["model"])
SAVED_USD = Counter(
    "penny_saved_usd", "What each mechanism saved against the naive way on recorded "
    "batches (the ledger's saving_<mechanism>_usd). Exact-cache hits answered at intake "
    "are not in it: penny_exact_cache_hits counts them, the ledger holds their saving.",
    ["model", "mechanism"])
LOST_USD = Counter(
    "penny_lost_usd", "What a mechanism cost beyond the naive way on recorded batches (a "
    "negative saving: a cascade's escalated attempts under routing, engine calls that "
    "raised under failover). A counter cannot go down, so losses are counted here.",
    ["model", "mechanism"])
SEMANTIC_CACHE_HITS = Counter(
    "penny_semantic_cache_hits", "Jobs a worker answered from the semantic cache instead "
    "of the engine.", ["model"])

# Webhook delivery (the coalescer role).
WEBHOOK_ATTEMPTS = Counter(
    "penny_webhook_attempts", "Webhook delivery attempts by what came of them: delivered, "
    "pending (tried again later), failed (given up), disabled (the receiver answered 410).",
    ["outcome"])


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def _process_registry() -> CollectorRegistry:
    """This process's metrics, or in multiprocess mode every process's, read from the
    shared directory at each collection."""
    if not multiprocess_dir():
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped upstream
    return registry


def exposition(extra: Iterable[CollectorRegistry] = ()) -> bytes:
    """The text a scrape gets: the process registry's metrics, then those of `extra`
    registries (collected at scrape time)."""
    return generate_latest(_process_registry()) + b"".join(generate_latest(r) for r in extra)


def serve_metrics(port: int | None, host: str) -> None:
    """Serve this process's metrics on their own port (a coalescer or a worker on a host
    of its own). None: nothing to serve, the API's /metrics has them."""
    if port is None:
        return
    start_http_server(port, addr=host, registry=_process_registry())
    log.info("metrics on http://%s:%d/metrics", host, port)


def record_window(model: str, batch_jobs: Sequence[int], batch_tokens: Sequence[int],
                  copies: int, max_jobs: int, max_tokens: int) -> None:
    """A window closed for `model` with batches of these sizes (jobs and estimated tokens)
    and `copies` jobs collapsed onto identical ones."""
    WINDOW_JOBS.labels(model).observe(sum(batch_jobs) + copies)
    for jobs, tokens in zip(batch_jobs, batch_tokens, strict=True):
        BATCH_JOBS.labels(model).observe(jobs)
        BATCH_FILL.labels(model).observe(min(1.0, max(jobs / max_jobs, tokens / max_tokens)))
    if copies:
        SINGLE_FLIGHT_HITS.labels(model).inc(copies)


def record_exact_cache_hits(models: Iterable[str]) -> None:
    """Jobs the exact result cache answered, one model name each; counted once their
    transaction committed."""
    for model, count in collections.Counter(models).items():
        EXACT_CACHE_HITS.labels(model).inc(count)


def record_sweep(redispatched_models: Sequence[str], failed: int) -> None:
    for model in redispatched_models:
        BATCHES_REDISPATCHED.labels(model).inc()
    if failed:
        BATCHES_GAVE_UP.inc(failed)


def record_batch(model: str, engine_seconds: float, totals: BatchTotals) -> None:
    """A worker recorded a batch: its engine time, how its jobs ended, and the sums of the
    ledger rows it wrote (the jobs it ran and the copies answered from them)."""
    BATCHES_RECORDED.labels(model).inc()
    ENGINE_SECONDS.labels(model).inc(engine_seconds)
    for outcome, count in totals.finished.items():
        JOBS_FINISHED.labels(model, outcome).inc(count)
    PROMPT_TOKENS.labels(model).inc(totals.engine_input_tokens)
    CACHED_TOKENS.labels(model).inc(totals.engine_cached_tokens)
    OUTPUT_TOKENS.labels(model).inc(totals.engine_output_tokens)
    COST_USD.labels(model).inc(float(totals.cost_usd))
    LIST_COST_USD.labels(model).inc(float(totals.list_cost_usd))
    SINGLE_FLIGHT_SAVED_USD.labels(model).inc(float(totals.single_flight_saved_usd))
    NAIVE_COST_USD.labels(model).inc(float(totals.naive_cost_usd))
    for mechanism, saved in totals.savings_usd.items():
        if saved >= 0:
            SAVED_USD.labels(model, mechanism).inc(float(saved))
        else:
            LOST_USD.labels(model, mechanism).inc(float(-saved))
    if totals.semantic_cache_hits:
        SEMANTIC_CACHE_HITS.labels(model).inc(totals.semantic_cache_hits)


def record_webhook_attempts(outcomes: Iterable[str]) -> None:
    """Attempts whose outcome was recorded (committed)."""
    for outcome, count in collections.Counter(outcomes).items():
        WEBHOOK_ATTEMPTS.labels(outcome).inc(count)
