"""Metrics from several processes: `penny api` and `penny coalescer` sharing
PROMETHEUS_MULTIPROC_DIR, so the API's /metrics shows the coalescer's windows; the
coalescer also serves them on its own `--metrics-port`."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from penny.runtime import Runtime
from tests.support import PennyProcess, free_port, penny_env, wait_for_http, wait_until

JOB = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 4}


def batch_counts(url: str, model: str) -> tuple[float, float]:
    """(batches dispatched, jobs in them) as `url` reports them."""
    found = {"penny_batch_jobs_count": 0.0, "penny_batch_jobs_sum": 0.0}
    for family in text_string_to_metric_families(httpx.get(url, timeout=5).text):
        for sample in family.samples:
            if sample.name in found and sample.labels.get("model") == model:
                found[sample.name] = sample.value
    return found["penny_batch_jobs_count"], found["penny_batch_jobs_sum"]


def test_api_metrics_add_up_the_coalescer_process(
    runtime: Runtime, redis_url: str, tmp_path: Path
) -> None:
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = penny_env(runtime.settings, PENNY_REDIS_URL=redis_url,
                    PROMETHEUS_MULTIPROC_DIR=str(shared))
    model = runtime.settings.default_model
    api_port, coalescer_port = free_port(), free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    with PennyProcess(["api", "--port", str(api_port)], env, tmp_path / "api.log") as api, \
            PennyProcess(["coalescer", "--metrics-port", str(coalescer_port)], env,
                         tmp_path / "coalescer.log") as coalescer:
        wait_for_http(api, f"{api_url}/healthz")
        wait_for_http(coalescer, f"http://127.0.0.1:{coalescer_port}/metrics")
        assert batch_counts(f"{api_url}/metrics", model) == (0, 0)

        accepted = httpx.post(f"{api_url}/v1/jobs/bulk", json={"jobs": [JOB] * 3})
        assert accepted.status_code == 202

        def dispatched() -> bool:
            coalescer.assert_running()
            return batch_counts(f"{api_url}/metrics", model)[0] > 0

        wait_until(dispatched, timeout=180, what="the coalescer to dispatch a batch")
        # The coalescer's own port reads the same shared directory.
        on_api = batch_counts(f"{api_url}/metrics", model)
        assert on_api == (1, 1)  # three identical jobs: one runs, two are copies
        assert batch_counts(f"http://127.0.0.1:{coalescer_port}/metrics", model) == on_api
        text = httpx.get(f"{api_url}/metrics").text
    assert f'penny_single_flight_hits_total{{model="{model}"}} 2.0' in text
    assert 'penny_http_requests_total{method="POST",route="/v1/jobs/bulk",status="202"} 1.0' \
        in text
