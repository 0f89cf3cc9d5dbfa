"""`POST /v1/uploads/csv` against a real Postgres: a CSV file is queued whole or refused
whole with every bad line named, streamed into jobs in chunks, idempotent, and its results
come back as spreadsheet-safe CSV. The engine is replaced by scripted generations
recorded through the worker's own `record_batch`."""

from __future__ import annotations

import csv
import io
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from intake.csv_upload import CHUNK_ROWS
from models.tables import Job, Submission
from penny.runtime import Runtime, open_runtime
from tests.integration.test_result_cache import run_queued
from tests.support import make_settings, reset_tables
from workers.finalize import finalize_ready

ACME = {"Authorization": "Bearer key-acme"}
GLOBEX = {"Authorization": "Bearer key-globex"}
GOOD = b"custom_id,prompt,team\nr1,What is 2 + 2?,blue\nr2,Name a colour.,red\n"


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    settings = make_settings(tmp_path, database_url,
                             api_keys={"key-acme": "acme", "key-globex": "globex"},
                             max_csv_upload_bytes=256 * 1024)
    runtime = open_runtime(settings)
    reset_tables(runtime)
    yield runtime
    runtime.close()


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime)) as client:
        yield client


def upload(client: TestClient, data: bytes, name: str = "in.csv",
           headers: dict[str, str] | None = None, **form: str) -> Any:
    return client.post("/v1/uploads/csv", files={"file": (name, data, "text/csv")},
                       data=form, headers={**ACME, **(headers or {})})


def counts(runtime: Runtime) -> tuple[int, int]:
    with runtime.sessions() as session:
        jobs = session.execute(select(func.count()).select_from(Job)).scalar_one()
        submissions = session.execute(select(func.count()).select_from(Submission)).scalar_one()
    return jobs, submissions


def jobs_of(runtime: Runtime, submission_id: str) -> list[Job]:
    with runtime.sessions() as session:
        rows = list(session.execute(select(Job).where(Job.submission_id == submission_id)
                                    .order_by(Job.line_no)).scalars())
        session.expunge_all()
    return rows


def test_a_good_file_is_queued_with_each_row_kept(client: TestClient, runtime: Runtime
                                                  ) -> None:
    response = upload(client, GOOD)
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["rows"], body["bad_rows"], body["from_cache"]) == (2, 0, 0)
    jobs = jobs_of(runtime, body["submission_id"])
    assert [(j.line_no, j.custom_id, j.status, j.tags) for j in jobs] == [
        (2, "r1", "queued", {"team": "blue"}), (3, "r2", "queued", {"team": "red"})]
    assert jobs[0].input_row == ["r1", "What is 2 + 2?", "blue"]
    read = client.get(f"/v1/submissions/{body['submission_id']}", headers=ACME)
    assert read.status_code == 200 and read.json()["total_jobs"] == 2


def test_bad_rows_reject_the_file_naming_every_line_and_create_nothing(
    client: TestClient, runtime: Runtime,
) -> None:
    data = b"prompt,max_tokens\nfine,8\n,8\nok,-5\nalso fine,8\nx,1,extra\n"
    response = upload(client, data)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_file"
    assert "3 of 5 rows are invalid; nothing was queued" in error["message"]
    assert [d["line"] for d in error["details"]] == [3, 4, 6]
    assert error["details"][1]["message"].startswith("line 4: max_tokens")
    assert counts(runtime) == (0, 0)


def test_skip_runs_the_good_rows_and_stores_each_bad_one_failed(
    client: TestClient, runtime: Runtime,
) -> None:
    data = b"prompt,max_tokens\nfine,8\n,8\nalso fine,8\n"
    response = upload(client, data, on_bad_rows="skip")
    assert response.status_code == 202, response.text
    assert (response.json()["rows"], response.json()["bad_rows"]) == (3, 1)
    jobs = jobs_of(runtime, response.json()["submission_id"])
    assert [(j.line_no, j.status) for j in jobs] == [(2, "queued"), (3, "failed"),
                                                     (4, "queued")]
    assert jobs[1].error is not None and jobs[1].error["line"] == 3


def test_an_unterminated_quote_is_refused_even_when_skipping(client: TestClient,
                                                             runtime: Runtime) -> None:
    data = b'custom_id,prompt\na,"What is 2+2?\nb,Name a colour.\nc,ok\n'
    response = upload(client, data, on_bad_rows="skip")
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert "cannot be read past line 2" in error["message"]
    assert error["details"][0]["line"] == 2
    assert counts(runtime) == (0, 0)


def test_latin1_is_refused_naming_the_line_unless_declared(client: TestClient) -> None:
    data = "prompt\nfine\ncaf\u00e9\n".encode("latin-1")
    refused = upload(client, data)
    assert refused.status_code == 422
    assert "line 3, column 4" in refused.json()["error"]["message"]
    assert refused.json()["error"]["param"] == "encoding"
    accepted = upload(client, data, encoding="latin-1")
    assert accepted.status_code == 202, accepted.text


def test_utf16_with_a_bom_is_read_when_declared(client: TestClient, runtime: Runtime) -> None:
    data = "prompt,custom_id\nw\u00f6rld,a\n".encode("utf-16")
    assert upload(client, data).status_code == 422
    accepted = upload(client, data, encoding="utf-16")
    assert accepted.status_code == 202, accepted.text
    (job,) = jobs_of(runtime, accepted.json()["submission_id"])
    assert job.request["messages"][-1]["content"] == "w\u00f6rld"


def test_a_template_and_an_id_column(client: TestClient, runtime: Runtime) -> None:
    data = b"ref,title,body\nx1,Rain,It rained all day.\n"
    response = upload(client, data, template="Summarise {title}: {body}", id_column="ref")
    assert response.status_code == 202, response.text
    (job,) = jobs_of(runtime, response.json()["submission_id"])
    assert job.custom_id == "x1"
    assert job.request["messages"] == [
        {"role": "user", "content": "Summarise Rain: It rained all day."}]


@pytest.mark.parametrize(
    ("form", "param", "fragment"),
    [
        ({"template": "Summarise {nope}"}, "template", "names column 'nope'"),
        ({"id_column": "ref"}, "id_column", "id column 'ref' is not in the header"),
        ({"encoding": "klingon"}, "encoding", "unknown encoding"),
        ({"on_bad_rows": "maybe"}, "on_bad_rows", "reject"),
    ],
)
def test_bad_options_are_a_precise_422(client: TestClient, runtime: Runtime,
                                       form: dict[str, str], param: str, fragment: str) -> None:
    response = upload(client, GOOD, **form)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == param and fragment in error["message"], error
    assert counts(runtime) == (0, 0)


def test_a_file_over_the_limit_is_a_413(client: TestClient, runtime: Runtime) -> None:
    # The limit is 256 KiB: a file just over it passes the body limit (which allows for
    # the multipart envelope) and is refused by size; a far larger body never gets read.
    for lines, code in ((20_000, "file_too_large"), (30_000, "request_too_large")):
        response = upload(client, b"prompt\n" + b"What is 2 + 2?\n" * lines)
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == code
    assert counts(runtime) == (0, 0)


def test_an_idempotency_key_replays_and_refuses_a_different_file(
    client: TestClient, runtime: Runtime,
) -> None:
    key = {"Idempotency-Key": "upload-1"}
    first = upload(client, GOOD, headers=key)
    again = upload(client, GOOD, headers=key)
    assert first.status_code == 202 and again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["submission_id"] == first.json()["submission_id"]
    other = upload(client, GOOD + b"r3,More?,green\n", headers=key)
    assert other.status_code == 409
    # Another tenant's key space is its own.
    theirs = client.post("/v1/uploads/csv", files={"file": ("in.csv", GOOD, "text/csv")},
                         headers={**GLOBEX, **key})
    assert theirs.status_code == 202
    assert counts(runtime) == (4, 2)


def test_many_rows_go_in_chunks_within_one_submission(client: TestClient,
                                                      runtime: Runtime) -> None:
    rows = CHUNK_ROWS * 2 + 17
    data = b"prompt\n" + b"".join(b"q%d\n" % n for n in range(rows))
    response = upload(client, data)
    assert response.status_code == 202, response.text
    assert response.json()["rows"] == rows
    jobs = jobs_of(runtime, response.json()["submission_id"])
    assert [j.line_no for j in jobs] == list(range(2, rows + 2))


def test_a_refused_row_deep_in_a_large_file_leaves_nothing(client: TestClient,
                                                           runtime: Runtime) -> None:
    rows = [b"q%d,8\n" % n for n in range(CHUNK_ROWS * 2)]
    rows[CHUNK_ROWS + 5] = b"bad,-1\n"  # after the first chunk was written
    response = upload(client, b"prompt,max_tokens\n" + b"".join(rows))
    assert response.status_code == 422
    assert [d["line"] for d in response.json()["error"]["details"]] == [CHUNK_ROWS + 7]
    assert counts(runtime) == (0, 0)


def test_results_come_back_as_spreadsheet_safe_csv(client: TestClient,
                                                   runtime: Runtime) -> None:
    data = (b"custom_id,prompt,output\n=1+1,What is 2 + 2?,mine\n+f2,\"Name,\na colour.\","
            b"x\n@bad,,y\n")
    response = upload(client, data, on_bad_rows="skip")
    assert response.status_code == 202, response.text
    submission_id = response.json()["submission_id"]
    early = client.get(f"/v1/submissions/{submission_id}/results_csv", headers=ACME)
    assert early.status_code == 409
    assert run_queued(runtime) == 2
    finalize_ready(runtime.sessions, runtime.store)
    got = client.get(f"/v1/submissions/{submission_id}/results_csv", headers=ACME)
    assert got.status_code == 200, got.text
    assert got.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(got.text)))
    assert list(rows[0]) == ["custom_id", "prompt", "output", "penny_output", "status",
                             "error", "cost_usd"]
    assert [r["custom_id"] for r in rows] == ["'=1+1", "'+f2", "'@bad"]
    assert rows[0]["output"] == "mine"
    assert rows[0]["penny_output"] == "answer to What is 2 + 2?"
    assert rows[1]["prompt"] == "Name,\na colour."
    assert [r["status"] for r in rows] == ["succeeded", "succeeded", "failed"]
    assert float(rows[0]["cost_usd"]) > 0 and rows[2]["cost_usd"] == ""
    assert "messages.0.content" in rows[2]["error"]
    jsonl = client.get(f"/v1/submissions/{submission_id}/results", headers=ACME)
    assert jsonl.status_code == 200 and len(jsonl.text.splitlines()) == 3
    # Another tenant cannot read it; a submission that was no CSV upload has no CSV.
    assert client.get(f"/v1/submissions/{submission_id}/results_csv",
                      headers=GLOBEX).status_code == 404
    job = client.post("/v1/jobs", headers=ACME, json={
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8})
    run_queued(runtime)
    finalize_ready(runtime.sessions, runtime.store)
    plain = job.json()["submission_id"]
    missing = client.get(f"/v1/submissions/{plain}/results_csv", headers=ACME)
    assert missing.status_code == 404
    assert missing.json()["error"]["param"] == "output"


def test_a_bad_callback_url_is_refused_before_anything_is_read(client: TestClient,
                                                               runtime: Runtime) -> None:
    response = upload(client, GOOD, callback_url="http://169.254.169.254/latest")
    assert response.status_code == 422
    assert response.json()["error"]["param"] == "callback_url"
    assert counts(runtime) == (0, 0)


def test_a_file_with_a_header_only_is_refused(client: TestClient, runtime: Runtime) -> None:
    response = upload(client, b"prompt,team\n")
    assert response.status_code == 422
    assert "holds no jobs" in response.json()["error"]["message"]
    assert counts(runtime) == (0, 0)


def test_queueing_memory_is_bounded_by_the_read_ahead_not_the_file(runtime: Runtime) -> None:
    """The file is parsed a few chunks ahead of the COPY, never further. At most the
    read-ahead's queue, the chunk being parsed and the chunk being written are alive at
    once, so a file of many chunks peaks below that many times what a one-chunk file
    takes (tracemalloc counts Python's own allocations, on every thread). How close to
    the bound a run gets depends on thread timing; holding the whole file would not fit
    under it at any timing."""
    from intake.admission import IntakePolicy
    from intake.csv_mapping import CsvOptions
    from intake.csv_upload import READ_AHEAD_CHUNKS, CsvSource, queue_csv
    from intake.limits import IntakeLimits
    from intake.max_tokens_caps import NO_CAPS
    from models.tenants import ensure_tenant

    settings = runtime.settings
    alive_at_once = READ_AHEAD_CHUNKS + 2
    many = 6 * alive_at_once
    peaks = []
    for chunks in (1, many):
        rows = chunks * CHUNK_ROWS
        data = b"custom_id,prompt,team\n" + b"".join(
            b"r%d,Translate item %d to French please,team-%d\n" % (n, n, n % 7)
            for n in range(rows))
        tracemalloc.start()
        try:
            with runtime.sessions() as session:
                tenant = ensure_tenant(session, "acme")
                queued = queue_csv(session, CsvSource(io.BytesIO(data), "big.csv",
                                                      CsvOptions(), settings.max_prompt_chars),
                                   tenant=tenant, limits=IntakeLimits.from_settings(settings),
                                   policy=IntakePolicy(), cache=None, caps=NO_CAPS)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert queued.rows == rows
        peaks.append(peak)  # the file's bytes were allocated before tracing began
    one_chunk, many_chunks = peaks
    assert many_chunks < (alive_at_once + 1) * one_chunk, peaks
