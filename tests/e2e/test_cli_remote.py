"""`penny submit / status / watch / results` against a running server on the real
engine: a CSV of jobs and an OpenAI batch file go in, progress and cost come back as the
ledger has them, results come out; bad input and a missing server get errors that say
what to do."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from api.app import create_app
from models.tables import Job, LedgerEntry, Submission
from penny.cli import app
from penny.runtime import Runtime
from tests.support import REPO, LiveServer, free_port
from workers.inprocess import InProcessPipeline
from workers.vllm_engine import VllmEngine

CSV = """prompt,system,custom_id,max_tokens,team
What is 2 + 2?,Answer in one short sentence.,sum,8,maths
Name a primary colour.,Answer in one short sentence.,colour,8,art
What is the capital of Italy?,Answer in one short sentence.,italy,8,geo
"""


@pytest.fixture
def server(runtime: Runtime, engine: VllmEngine) -> Iterator[str]:
    pipeline = InProcessPipeline(runtime, [engine])
    with pipeline, LiveServer(create_app(runtime, pipeline)) as live:
        yield live.url


def penny(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def ledger_cost(runtime: Runtime) -> Decimal:
    with runtime.sessions() as session:
        return Decimal(session.execute(select(func.sum(LedgerEntry.cost_usd))).scalar_one())


@pytest.mark.engine
def test_csv_jobs_submit_watch_status_results(
    server: str, runtime: Runtime, tmp_path: Path
) -> None:
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(CSV)
    code, out = penny("submit", str(jobs), "--url", server)
    assert code == 0, out
    submission, summary = out.strip().split("\t")
    assert summary == "3 jobs (csv)"

    code, out = penny("watch", submission, "--url", server)
    assert code == 0, out
    assert "completed: 3/3 jobs finished, 0 failed" in out

    code, out = penny("status", submission, "--url", server)
    assert code == 0, out
    assert out.startswith("completed: 3/3 jobs finished, 0 failed")
    assert f"cost ${ledger_cost(runtime)}" in out

    code, out = penny("results", submission, "--url", server)
    assert code == 0, out
    lines = [json.loads(line) for line in out.splitlines()]
    assert sorted(line["custom_id"] for line in lines) == ["colour", "italy", "sum"]
    code, out = penny("results", submission, "--url", server, "--ledger", "csv")
    assert code == 0 and len(out.strip().splitlines()) == 4  # header + 3 jobs


@pytest.mark.engine
def test_openai_batch_file_becomes_a_batch(server: str, runtime: Runtime) -> None:
    code, out = penny("submit", str(REPO / "examples" / "openai_batch.jsonl"), "--url", server,
                      "--watch")
    assert code == 0, out
    batch_id = out.split("\t")[0]
    assert batch_id.startswith("batch_")
    assert "completed: 3/3 jobs finished, 0 failed" in out
    with runtime.sessions() as session:
        kinds = session.execute(select(Submission.kind)).scalars().all()
    assert kinds == ["openai_batch"]
    code, out = penny("results", batch_id, "--url", server)
    assert code == 0, out
    assert len(out.splitlines()) == 3


def test_bad_lines_are_listed_and_nothing_is_sent(runtime: Runtime, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"prompt": "fine", "max_tokens": 4}\n{"prompt": "x", "max_tokens": -1}\n'
                    "not json\n")
    # No server is needed to refuse the file: it is checked before anything is sent.
    code, out = penny("submit", str(jobs), "--url", f"http://127.0.0.1:{free_port()}")
    assert code == 2
    assert "2 bad line(s); nothing was submitted" in out
    assert "line 2: max_tokens" in out and "line 3:" in out
    with runtime.sessions() as session:
        assert session.execute(select(func.count()).select_from(Submission)).scalar_one() == 0


def test_errors_say_what_to_do(runtime: Runtime, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"prompt": "fine", "max_tokens": 4}\n')
    nowhere = f"http://127.0.0.1:{free_port()}"
    code, out = penny("submit", str(jobs), "--url", nowhere)
    assert code == 2
    assert f"no penny server answers at {nowhere}" in out and "`penny up`" in out

    code, out = penny("status", "not-an-id", "--url", nowhere)
    assert code == 2 and "is not a submission id" in out

    with LiveServer(create_app(runtime)) as live:  # a server without workers
        code, out = penny("status", "7f6c1f9e-0000-4000-8000-000000000000", "--url", live.url)
        assert code == 2 and "404" in out and "`penny submit` printed it" in out
        code, out = penny("submit", str(jobs), "--url", live.url)
        assert code == 0, out
        code, out = penny("results", out.split("\t")[0], "--url", live.url)
        assert code == 2 and "409" in out and "`penny watch ID`" in out


def test_a_full_queue_says_when_to_try_again(runtime: Runtime, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"prompt": "one", "max_tokens": 4}\n{"prompt": "two", "max_tokens": 4}\n')
    limited = runtime.settings.model_copy(update={"max_queued_jobs_per_tenant": 1})
    with LiveServer(create_app(replace(runtime, settings=limited))) as live:
        code, out = penny("submit", str(jobs), "--url", live.url)
    assert code == 2
    assert "429" in out and "Try again in 30 s." in out
    with runtime.sessions() as session:
        assert session.execute(select(func.count()).select_from(Submission)).scalar_one() == 0


def test_a_csv_is_streamed_to_the_upload_endpoint_with_the_csv_options(
    runtime: Runtime, tmp_path: Path
) -> None:
    """More rows than one bulk request may hold, in latin-1, with a template and an id
    column: `penny submit` takes the options `penny run` takes."""
    rows = 25
    jobs = tmp_path / "notes.csv"
    jobs.write_bytes(("ref,note\n" + "".join(f"n{i},caf\u00e9 {i}\n" for i in range(rows))
                      ).encode("latin-1"))
    bulk_capped = runtime.settings.model_copy(update={"max_bulk_jobs": 10})
    with LiveServer(create_app(replace(runtime, settings=bulk_capped))) as live:
        code, out = penny("submit", str(jobs), "--url", live.url, "--template",
                          "Summarise: {note}", "--id-column", "ref", "--encoding", "latin-1")
    assert code == 0, out
    submission, summary = out.strip().split("\t")
    assert summary == f"{rows} jobs (csv)"
    with runtime.sessions() as session:
        kinds = session.execute(select(Submission.id, Submission.kind)).all()
        stored = session.execute(select(Job.custom_id, Job.request)
                                 .order_by(Job.line_no)).all()
    assert [(str(sid), kind) for sid, kind in kinds] == [(submission, "csv")]
    assert [custom_id for custom_id, _ in stored] == [f"n{i}" for i in range(rows)]
    assert "Summarise: caf\u00e9 3" in json.dumps(stored[3][1], ensure_ascii=False)


def test_bad_csv_rows_are_listed_and_can_be_skipped(runtime: Runtime, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("prompt,max_tokens\nfine,4\nalso fine,lots\nok,4\n")
    with LiveServer(create_app(runtime)) as live:
        code, out = penny("submit", str(jobs), "--url", live.url)
        assert code == 2
        assert "422" in out and "line 3" in out and "--skip-bad-rows" in out
        with runtime.sessions() as session:
            assert session.scalar(select(func.count()).select_from(Job)) == 0

        code, out = penny("submit", str(jobs), "--url", live.url, "--skip-bad-rows")
    assert code == 0, out
    assert out.strip().split("\t")[1] == "3 jobs (csv, 1 bad rows as failed jobs)"
    with runtime.sessions() as session:
        statuses = session.execute(select(Job.status).order_by(Job.line_no)).scalars().all()
    assert statuses == ["queued", "failed", "queued"]


def test_csv_options_on_a_jsonl_file_say_they_are_for_csv(
    runtime: Runtime, tmp_path: Path
) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"prompt": "fine", "max_tokens": 4}\n')
    code, out = penny("submit", str(jobs), "--url", f"http://127.0.0.1:{free_port()}",
                      "--template", "{prompt}")
    assert code == 2 and "read CSV files" in out and "leave them out for JSONL" in out
