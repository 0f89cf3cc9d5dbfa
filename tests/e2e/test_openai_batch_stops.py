"""Batches that stop midway, through the `openai` SDK on the real engine: a cancel, and a
completion window that runs out. Small engine batches make the work take many steps, so
both arrive while some lines are done and others have not started."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import func, select

from api.app import create_app
from models.tables import LedgerEntry
from penny.runtime import Runtime
from penny.settings import Settings
from tests.support import LiveServer, make_settings, wait_until
from workers.inprocess import InProcessPipeline
from workers.vllm_engine import VllmEngine

pytestmark = pytest.mark.engine

MODEL = "smollm2-135m-instruct"
ENDED = {"completed", "failed", "cancelled", "expired"}


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url, max_batch_jobs=1, sweep_interval_seconds=0.3)


@pytest.fixture
def client(runtime: Runtime, engine: VllmEngine) -> Iterator[openai.OpenAI]:
    with LiveServer(create_app(runtime)) as server, InProcessPipeline(runtime, [engine]):
        yield openai.OpenAI(base_url=f"{server.url}/v1", api_key="any", max_retries=0)


def create(client: openai.OpenAI, count: int, window: str) -> Any:
    lines = [{"custom_id": f"story-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": MODEL, "max_tokens": 32, "messages": [
                  {"role": "user", "content": f"Tell a short story about the number {i}."}]}}
             for i in range(count)]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    upload = client.files.create(file=("stories.jsonl", data), purpose="batch")
    return client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                 completion_window=window)


def wait_ended(client: openai.OpenAI, batch_id: str) -> Any:
    wait_until(lambda: client.batches.retrieve(batch_id).status in ENDED, timeout=300,
               what="the batch to end", interval=0.3)
    return client.batches.retrieve(batch_id)


def lines_of(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def billed_jobs(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        return int(session.execute(select(func.count()).select_from(LedgerEntry)).scalar_one())


def test_cancel_midway_keeps_and_bills_only_finished_work(
    client: openai.OpenAI, runtime: Runtime
) -> None:
    batch = create(client, 16, "24h")
    wait_until(lambda: (client.batches.retrieve(batch.id).request_counts
                        or openai.types.BatchRequestCounts(completed=0, failed=0, total=0)
                        ).completed >= 2, timeout=300, what="two lines to finish")
    running = client.batches.retrieve(batch.id)
    # Counters and usage move while the batch runs.
    assert running.status == "in_progress"
    assert running.request_counts is not None and 2 <= running.request_counts.completed < 16
    assert running.usage is not None and running.usage.output_tokens > 0

    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    ended = wait_ended(client, batch.id)
    assert ended.status == "cancelled" and ended.cancelled_at is not None

    done = lines_of(client, ended.output_file_id)
    stopped = lines_of(client, ended.error_file_id)
    assert sorted(line["custom_id"] for line in done + stopped) == sorted(
        f"story-{i}" for i in range(16))
    assert len(done) >= 2 and stopped
    assert all(line["error"]["code"] == "batch_cancelled" and line["penny_cost"] is None
               for line in stopped)
    assert all(line["response"]["status_code"] == 200 and line["penny_cost"] for line in done)
    assert ended.request_counts is not None
    assert (ended.request_counts.completed, ended.request_counts.failed) == (
        len(done), len(stopped))
    assert billed_jobs(runtime) == len(done)  # finished work billed once, the rest not at all
    cost = (ended.model_extra or {})["penny_cost"]
    assert Decimal(cost["cost_usd"]) == sum(Decimal(line["penny_cost"]["cost_usd"])
                                            for line in done)

    # penny's retry runs exactly the cancelled lines again, under the same custom_ids.
    retried = client.post(f"/batches/{batch.id}/retry", cast_to=openai.types.Batch)
    again = wait_ended(client, retried.id)
    assert again.status == "completed"
    assert sorted(line["custom_id"] for line in lines_of(client, again.output_file_id)) == (
        sorted(line["custom_id"] for line in stopped))


def test_window_runs_out_midway(client: openai.OpenAI, runtime: Runtime) -> None:
    batch = create(client, 30, "5s")
    ended = wait_ended(client, batch.id)
    assert ended.status == "expired" and ended.expired_at is not None
    done = lines_of(client, ended.output_file_id)
    expired = lines_of(client, ended.error_file_id)
    assert sorted(line["custom_id"] for line in done + expired) == sorted(
        f"story-{i}" for i in range(30))
    assert done, "some lines finish inside the window"
    assert expired, "the window is far too short for all of them"
    assert all(line["error"]["code"] == "batch_expired" for line in expired)
    assert billed_jobs(runtime) == len(done)
