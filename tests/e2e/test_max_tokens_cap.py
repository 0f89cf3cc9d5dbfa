"""A per-feature max_tokens cap on the real engine: intake lowers the job's max_tokens (a
single job's, or an OpenAI batch line's), the engine stops there (finish_reason "length",
for the client to see), the ledger credits the cap with what the job asked for, and the
reports count it."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from models.costing import MeasuredSpeed, store_calibration
from models.tables import Job, LedgerEntry
from penny.runtime import Runtime
from tests.support import jsonl, wait_until
from workers.inprocess import InProcessPipeline
from workers.vllm_engine import VllmEngine

pytestmark = pytest.mark.engine

SPEED = MeasuredSpeed(request_overhead_s=0.02, prefill_s_per_token=0.0002,
                      decode_s_per_token_bs1=0.02, decode_s_per_token_full=0.002,
                      full_batch_jobs=64, machine={"cpus": 2}, engine_settings={},
                      samples=[])


def test_a_capped_job_stops_at_the_cap_and_the_ledger_credits_it(
    runtime: Runtime, engine: VllmEngine,
) -> None:
    with runtime.sessions() as session:
        store_calibration(session, engine.model_name, SPEED)
    with TestClient(create_app(runtime)) as client:
        cap = client.put("/v1/max-tokens-caps", json={"feature": "essay", "max_tokens": 4})
        assert cap.status_code == 200, cap.text
        job = client.post("/v1/jobs", json={
            "messages": [{"role": "user", "content": "Write a long story about the sea."}],
            "max_tokens": 48, "metadata": {"feature": "essay"}}).json()

        def ended() -> bool:
            with runtime.sessions() as session:
                status = session.execute(select(Job.status).where(
                    Job.id == job["id"])).scalar_one()
            return status in ("succeeded", "failed")

        with InProcessPipeline(runtime, [engine]):
            wait_until(ended, timeout=240, what="the capped job to finish")
        shown = client.get(f"/v1/jobs/{job['id']}").json()
        audit = client.get("/v1/reports/max-tokens-audit").json()["data"]
        costs = client.get("/v1/reports/costs").json()["totals"]
    assert shown["status"] == "succeeded"
    assert shown["result"]["finish_reason"] == "length"
    assert shown["usage"]["completion_tokens"] == 4
    assert shown["max_tokens"] == {"requested": 48, "applied": 4}
    with runtime.sessions() as session:
        row = session.execute(select(LedgerEntry).where(
            LedgerEntry.job_id == job["id"])).scalar_one()
    assert row.saving_output_limit_usd > 0  # counted as if it had made all 48 tokens
    assert Decimal(shown["cost"]["savings_by_mechanism_usd"]["output_limit"]) == (
        row.saving_output_limit_usd)
    [line] = audit
    assert (line["feature"], line["capped_jobs"], line["length_jobs"]) == ("essay", 1, 1)
    assert costs["capped_jobs"] == 1 and costs["length_jobs"] == 1


def test_a_capped_openai_batch_line_stops_at_the_cap_and_the_ledger_credits_it(
    runtime: Runtime, engine: VllmEngine,
) -> None:
    """The batch's metadata names the feature; the cap comes from the tenant's settings,
    not from the line, which asks for 48 tokens."""
    with runtime.sessions() as session:
        store_calibration(session, engine.model_name, SPEED)
    line = {"custom_id": "story", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": engine.model_name, "max_tokens": 48, "messages": [
                {"role": "user", "content": "Write a long story about the sea."}]}}
    with TestClient(create_app(runtime)) as client:
        assert client.put("/v1/max-tokens-caps", json={
            "feature": "essay", "max_tokens": 4}).status_code == 200
        upload = client.post("/v1/files", data={"purpose": "batch"},
                             files={"file": ("in.jsonl", jsonl([line]), "application/jsonl")})
        assert upload.status_code == 200, upload.text
        created = client.post("/v1/batches", json={
            "input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions",
            "completion_window": "24h", "metadata": {"feature": "essay"}})
        assert created.status_code == 200, created.text
        batch_id = created.json()["id"]

        def ended() -> bool:
            status = client.get(f"/v1/batches/{batch_id}").json()["status"]
            return status in ("completed", "failed", "expired", "cancelled")

        with InProcessPipeline(runtime, [engine]):
            wait_until(ended, timeout=240, what="the capped batch to end")
        batch = client.get(f"/v1/batches/{batch_id}").json()
        assert batch["status"] == "completed", batch
        output = client.get(f"/v1/files/{batch['output_file_id']}/content").text
    [answer] = [json.loads(text) for text in output.splitlines()]
    body = answer["response"]["body"]
    assert answer["custom_id"] == "story"
    assert body["choices"][0]["finish_reason"] == "length"  # cut by the cap
    assert body["usage"]["completion_tokens"] == 4
    with runtime.sessions() as session:
        job = session.execute(select(Job).where(Job.custom_id == "story")).scalar_one()
        row = session.execute(select(LedgerEntry).where(
            LedgerEntry.job_id == job.id)).scalar_one()
    assert job.request["sampling"]["max_tokens"] == 4
    assert job.request["sampling"]["requested_max_tokens"] == 48
    assert row.output_tokens == 4
    assert row.saving_output_limit_usd > 0  # counted as if it had made all 48 tokens
