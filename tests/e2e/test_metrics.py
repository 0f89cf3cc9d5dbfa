"""Prometheus /metrics after real work on the real engine: the queue gauges read from
Postgres, and every counter moved by exactly what the ledger and the batches recorded."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from api.app import create_app
from ledger.attribution import MECHANISMS, saving_column
from models.tables import Batch, LedgerEntry
from penny.runtime import Runtime
from tests.support import LiveServer, wait_until
from workers.inprocess import InProcessPipeline
from workers.vllm_engine import VllmEngine

pytestmark = pytest.mark.engine

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

SYSTEM = ("You answer questions about animals in one short sentence, plainly, without "
          "lists, and you never repeat the question back to the person asking it. ") * 2
ANIMALS = ("cats", "dogs", "owls", "bees", "frogs", "seals")


def scrape(client: httpx.Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def total(answers: list[Mapping[str, Any]], section: str, key: str,
          served_by: str | None = None) -> Decimal:
    return sum((Decimal(str(a[section][key])) for a in answers
                if served_by is None or a["cost"]["served_by"] == served_by), Decimal(0))


def test_metrics_count_what_the_ledger_recorded(runtime: Runtime, engine: VllmEngine) -> None:
    model = engine.model_name
    jobs = [{"messages": [{"role": "system", "content": SYSTEM},
                          {"role": "user", "content": f"What do {animal} eat?"}],
             "max_tokens": 12} for animal in ANIMALS]
    jobs += [jobs[0], jobs[0]]  # two exact copies: single-flight answers them
    pipeline = InProcessPipeline(runtime, [engine])
    with LiveServer(create_app(runtime, pipeline)) as server, httpx.Client(
        base_url=server.url, timeout=30
    ) as client:
        before = scrape(client)
        accepted = client.post("/v1/jobs/bulk", json={"jobs": jobs})
        assert accepted.status_code == 202
        submission = accepted.json()["submission_id"]
        assert client.get("/no/such/route").status_code == 404

        queued = scrape(client)  # nothing runs yet: every job waits in the queue
        assert value(queued, "penny_queue_depth", model=model) == 8
        assert value(queued, "penny_jobs", model=model, state="queued") == 8
        assert value(queued, "penny_jobs", model=model, state="running") == 0
        assert value(queued, "penny_queue_oldest_age_seconds", model=model) >= 0
        assert value(queued, "penny_queue_scrape_ok") == 1

        polls = 0

        def completed() -> bool:
            nonlocal polls
            polls += 1
            return client.get(f"/v1/submissions/{submission}").json()["status"] == "completed"

        with pipeline:
            wait_until(completed, timeout=240, what="the submission to complete", interval=0.5)
        answers = [client.get(f"/v1/jobs/{job_id}").json()
                   for job_id in accepted.json()["job_ids"]]
        after = scrape(client)

    with runtime.sessions() as session:
        batches = session.execute(select(Batch.job_count, Batch.engine_seconds)).all()

    assert [a["status"] for a in answers] == ["succeeded"] * 8
    copies = [a for a in answers if a["cost"]["served_by"] == "single_flight"]
    assert len(copies) == 2

    # The coalescer: batches as the database holds them, and the two copies collapsed.
    assert moved(before, after, "penny_batch_jobs_count", model=model) == len(batches)
    assert moved(before, after, "penny_batch_jobs_sum", model=model) == sum(
        n for n, _ in batches) == 6
    assert moved(before, after, "penny_window_jobs_sum", model=model) == 8
    assert moved(before, after, "penny_single_flight_hits_total", model=model) == 2
    assert moved(before, after, "penny_batch_fill_ratio_count", model=model) == len(batches)

    # The worker: tokens as the ledger has them for the jobs the engine ran.
    assert moved(before, after, "penny_batches_recorded_total", model=model) == len(batches)
    assert moved(before, after, "penny_jobs_finished_total", model=model,
                 outcome="succeeded") == 8
    assert moved(before, after, "penny_output_tokens_total", model=model) == total(
        answers, "usage", "completion_tokens", served_by="engine")
    assert moved(before, after, "penny_prompt_tokens_total", model=model) == total(
        answers, "usage", "prompt_tokens", served_by="engine")
    cached = moved(before, after, "penny_cached_prompt_tokens_total", model=model)
    assert cached == total(answers, "usage", "cached_tokens", served_by="engine")
    assert cached > 0  # five jobs reuse the shared system prompt
    assert moved(before, after, "penny_engine_seconds_total", model=model) == pytest.approx(
        sum(seconds for _, seconds in batches))

    # Money, copies included: the ledger's own sums.
    assert moved(before, after, "penny_cost_usd_total", model=model) == pytest.approx(
        float(total(answers, "cost", "usd")), rel=1e-9)
    assert moved(before, after, "penny_list_cost_usd_total", model=model) == pytest.approx(
        float(total(answers, "cost", "list_usd")), rel=1e-9)
    saved = moved(before, after, "penny_single_flight_saved_usd_total", model=model)
    assert saved == pytest.approx(float(total(answers, "cost", "single_flight_saved_usd")),
                                  rel=1e-9)
    assert saved > 0
    # The naive counterfactual and the savings by mechanism: the ledger's own sums.
    with runtime.sessions() as session:
        naive = session.scalar(select(func.sum(LedgerEntry.naive_cost_usd)))
        by_mechanism = {m: session.scalar(select(func.sum(getattr(LedgerEntry,
                                                                  saving_column(m)))))
                        for m in MECHANISMS}
    assert moved(before, after, "penny_naive_cost_usd_total", model=model) == pytest.approx(
        float(naive), rel=1e-9)
    for mechanism, expected in by_mechanism.items():
        assert moved(before, after, "penny_saved_usd_total", model=model,
                     mechanism=mechanism) == pytest.approx(float(expected), rel=1e-9)
    assert moved(before, after, "penny_saved_usd_total", model=model,
                 mechanism="single_flight") > 0

    # The API: by route template and status.
    assert moved(before, after, "penny_http_requests_total", method="POST",
                 route="/v1/jobs/bulk", status="202") == 1
    assert moved(before, after, "penny_http_requests_total", method="GET",
                 route="/v1/submissions/{submission_id}", status="200") == polls
    assert moved(before, after, "penny_http_requests_total", method="GET",
                 route="/v1/jobs/{job_id}", status="200") == 8
    assert moved(before, after, "penny_http_requests_total", method="GET",
                 route="unmatched", status="404") == 1

    # Drained: the queue gauges say so.
    assert value(after, "penny_queue_depth", model=model) == 0
    assert value(after, "penny_jobs", model=model, state="running") == 0
