"""Scale-out on real parts: two `penny coalescer` processes and two `penny worker`
processes against one Postgres and one Redis. Three OpenAI embeddings batches (small
batches, so both coalescers and both workers get many turns) finish with every job run
once: none lost, none in two batches, none recorded or billed twice. The workers serve
the embedding model (sentence-transformers), so no vLLM is loaded."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from api.app import create_app
from models.status import JobStatus
from models.tables import Batch, Job, LedgerEntry, Result
from models.workers import live_workers
from penny.runtime import Runtime, open_runtime
from penny.settings import OFFLINE_EMBEDDING_MODEL_NAME
from tests.support import (
    LiveServer,
    PennyProcess,
    jsonl,
    make_settings,
    openai_sdk,
    penny_env,
    read_jsonl,
    reset_tables,
    wait_until,
)

MODEL = OFFLINE_EMBEDDING_MODEL_NAME
BATCH_JOBS = 4  # small batches: many windows for the two coalescers to contend over
FILES, LINES = 3, 40
WINDOW = re.compile(r"window closed for \S+: \d+ jobs in (\d+) batches")


@pytest.fixture
def shared(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Runtime]:
    # Embeddings only: the coalescers load no chat tokenizer, the workers no vLLM.
    settings = make_settings(tmp_path, database_url, redis_url=redis_url, models={},
                             max_batch_jobs=BATCH_JOBS)
    runtime = open_runtime(settings)
    reset_tables(runtime)  # the test counts every job and batch in the database
    yield runtime
    runtime.close()


def batches_cut(log: Path) -> int:
    return sum(int(n) for n in WINDOW.findall(log.read_text(errors="replace")))


def test_two_coalescers_and_two_workers_run_every_job_exactly_once(
    shared: Runtime, tmp_path: Path
) -> None:
    env = penny_env(shared.settings, PENNY_MODELS="{}", PENNY_MAX_BATCH_JOBS=str(BATCH_JOBS))
    logs = {name: tmp_path / f"{name}.log"
            for name in ("worker-a", "worker-b", "coalescer-a", "coalescer-b")}
    with (PennyProcess(["worker", "--model", MODEL, "--verbose"], env, logs["worker-a"]),
          PennyProcess(["worker", "--model", MODEL, "--verbose"], env, logs["worker-b"]),
          PennyProcess(["coalescer", "--verbose"], env, logs["coalescer-a"]) as first,
          PennyProcess(["coalescer", "--verbose"], env, logs["coalescer-b"]) as second,
          LiveServer(create_app(shared)) as server):

        def both_workers_live() -> bool:
            first.assert_running()
            second.assert_running()
            with shared.sessions() as session:
                return len(live_workers(session, 15).get(MODEL, [])) == 2

        # Four processes importing at once on a small machine: minutes, not seconds.
        wait_until(both_workers_live, timeout=420, what="both workers to heartbeat")
        client = openai_sdk(server)
        sent: dict[str, list[str]] = {}
        for f in range(FILES):
            lines = [{"custom_id": f"f{f}-{i}", "method": "POST", "url": "/v1/embeddings",
                      "body": {"model": MODEL, "input": f"Sentence {i} of file {f}."}}
                     for i in range(LINES)]
            upload = client.files.create(file=(f"f{f}.jsonl", jsonl(lines)), purpose="batch")
            batch = client.batches.create(input_file_id=upload.id,
                                          endpoint="/v1/embeddings", completion_window="24h")
            sent[batch.id] = [line["custom_id"] for line in lines]
        wait_until(lambda: all(client.batches.retrieve(b).status == "completed"
                               for b in sent), timeout=300, what="every batch to complete",
                   interval=0.5)
        outputs = {b: read_jsonl(client, client.batches.retrieve(b).output_file_id)
                   for b in sent}
    # Every line answered exactly once, in its own batch's output.
    for batch_id, custom_ids in sent.items():
        assert sorted(o["custom_id"] for o in outputs[batch_id]) == sorted(custom_ids)

    with shared.sessions() as session:
        jobs = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
        results = session.scalar(select(func.count()).select_from(Result))
        billed = session.scalar(select(func.count()).select_from(LedgerEntry))
        batches = session.execute(select(Batch.id, Batch.job_count, Batch.attempts,
                                         Batch.worker_id)).all()
        in_batch = dict(session.execute(
            select(Job.batch_id, func.count()).where(Job.batch_id.is_not(None))
            .group_by(Job.batch_id)).all())
    total = FILES * LINES
    assert dict(jobs) == {JobStatus.SUCCEEDED: total}
    assert (results, billed) == (total, total)
    # A job planned into two batches would be counted by both, but point at one only.
    assert sum(b.job_count for b in batches) == total
    assert all(in_batch.get(b.id, 0) == b.job_count for b in batches)
    assert [b for b in batches if b.attempts != 1] == []  # no batch ran twice
    # Both coalescers cut batches, and both workers ran some: the run exercised the
    # contention it claims to survive.
    assert batches_cut(logs["coalescer-a"]) > 0 and batches_cut(logs["coalescer-b"]) > 0
    assert batches_cut(logs["coalescer-a"]) + batches_cut(logs["coalescer-b"]) == len(batches)
    assert len({b.worker_id for b in batches}) == 2
