"""Outputs and ledger land in S3 through boto3, against an S3-compatible server on loopback."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from penny.runtime import open_runtime
from tests.support import free_port, make_settings, wait_until
from workers.inprocess import InProcessPipeline
from workers.vllm_engine import VllmEngine

pytestmark = pytest.mark.engine
BUCKET = "penny-outputs"


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch, engine: VllmEngine) -> Iterator[str]:
    # Imported late, after the engine is up: vLLM's start-up probes every loaded module,
    # and moto loads Flask, whose context-bound globals raise when probed.
    from moto.server import ThreadedMotoServer

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


def test_submission_outputs_are_written_to_s3(
    tmp_path: Path, database_url: str, s3_endpoint: str, engine: VllmEngine
) -> None:
    settings = make_settings(tmp_path, database_url, object_store_url=f"s3://{BUCKET}/runs",
                             s3_endpoint_url=s3_endpoint)
    runtime = open_runtime(settings)
    jobs = [{"prompt": f"Count from {i} to {i + 3}:", "max_tokens": 12, "custom_id": f"c{i}"}
            for i in range(5)]
    try:
        with InProcessPipeline(runtime, [engine]), TestClient(create_app(runtime)) as client:
            submission = client.post("/v1/jobs/bulk", json={"jobs": jobs}).json()["submission_id"]
            wait_until(
                lambda: client.get(f"/v1/submissions/{submission}").json()["status"]
                == "completed", timeout=240, what="the submission to complete")
            outputs = client.get(f"/v1/submissions/{submission}").json()["outputs"]
    finally:
        runtime.close()

    prefix = f"runs/submissions/{submission}"
    assert outputs == {
        "results": f"s3://{BUCKET}/{prefix}/results.jsonl",
        "ledger_json": f"s3://{BUCKET}/{prefix}/ledger.json",
        "ledger_csv": f"s3://{BUCKET}/{prefix}/ledger.csv",
    }
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)

    def read(key: str) -> str:
        return s3.get_object(Bucket=BUCKET, Key=f"{prefix}/{key}")["Body"].read().decode()

    results = [json.loads(line) for line in read("results.jsonl").splitlines()]
    assert [r["custom_id"] for r in results] == [j["custom_id"] for j in jobs]
    assert all(r["status"] == "succeeded" for r in results)
    rows = list(csv.DictReader(io.StringIO(read("ledger.csv"))))
    assert sorted(r["job_id"] for r in rows) == sorted(r["job_id"] for r in results)
    assert json.loads(read("ledger.json"))["totals"]["succeeded"] == 5
