"""`penny run FILE` end to end on the embedded default: its own Postgres under the data
directory, the in-process pipeline, outputs in the local object store."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from tests.support import MODELS_DIR, REPO

pytestmark = pytest.mark.engine


def penny_run(path: Path, data_dir: Path, *options: str, **settings: str
              ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PENNY_")}
    env.update(PENNY_DATA_DIR=str(data_dir), PENNY_MODELS_DIR=str(MODELS_DIR), **settings)
    penny = Path(sys.executable).with_name("penny")
    return subprocess.run([str(penny), "run", str(path), *options], env=env,
                          capture_output=True,
                          text=True, timeout=600, check=False)


def outputs_of(stdout: str) -> dict[str, Path]:
    found = {}
    for line in stdout.splitlines():
        name, _, uri = line.partition(": file://")
        if uri:
            found[name.strip()] = Path(uri.strip())
    return found


def test_example_file_runs_end_to_end_on_embedded_postgres(tmp_path: Path) -> None:
    example = REPO / "examples" / "requests.jsonl"
    completed = penny_run(example, tmp_path / "data")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "24 (24 / 0)" in completed.stdout
    assert (tmp_path / "data" / "pg" / "PG_VERSION").is_file()  # the embedded server's data
    outputs = outputs_of(completed.stdout)
    assert set(outputs) == {"results", "ledger_json", "ledger_csv"}
    results = [json.loads(line) for line in outputs["results"].read_text().splitlines()]
    sent = [json.loads(line) for line in example.read_text().splitlines()]
    assert [r["custom_id"] for r in results] == [s["custom_id"] for s in sent]
    assert all(r["response"]["text"] for r in results)
    assert results[0]["metadata"] == {"team": "travel"}
    ledger = json.loads(outputs["ledger_json"].read_text())
    assert ledger["totals"]["jobs"] == 24
    assert ledger["totals"]["cached_tokens"] > 0  # 20 jobs share one long system prompt


def test_bad_csv_rows_reject_the_file_or_become_error_records_when_skipped(
    tmp_path: Path,
) -> None:
    source = tmp_path / "mixed.csv"
    source.write_text(
        "id,prompt,max_tokens\n"
        "a,What is 2 + 2?,8\n"
        "b,,8\n"
        "c,Name a colour.,-5\n"
        "d,Name a fruit.,8\n"
    )
    refused = penny_run(source, tmp_path / "data")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stdout == ""
    lines = refused.stderr.splitlines()
    assert lines[0] == "penny run: mixed.csv: 2 of 4 rows are invalid; nothing was queued " \
        "(fix them, or ask to skip bad rows)"
    assert lines[1].startswith("  line 3: ") and lines[2].startswith("  line 4: max_tokens")
    completed = penny_run(source, tmp_path / "data", "--skip-bad-rows")
    assert completed.returncode == 1, completed.stdout + completed.stderr
    results = outputs_of(completed.stdout)["results"].read_text().splitlines()
    by_line = {r["line"]: r for r in map(json.loads, results)}
    assert sorted(by_line) == [2, 3, 4, 5]
    assert by_line[2]["status"] == by_line[5]["status"] == "succeeded"
    assert by_line[3]["status"] == by_line[4]["status"] == "failed"
    assert by_line[3]["error"]["line"] == 3
    assert "max_tokens" in by_line[4]["error"]["message"]
    assert by_line[2]["metadata"] == {"id": "a"}
    table = outputs_of(completed.stdout)["results_csv"].read_text().splitlines()
    assert table[0] == "id,prompt,max_tokens,output,status,error,cost_usd"
    assert table[1].startswith("a,What is 2 + 2?,8,") and ",succeeded,," in table[1]
    assert table[2].startswith("b,,8,,failed,")


def test_a_second_run_of_the_same_file_is_answered_from_the_result_cache(
    tmp_path: Path,
) -> None:
    example = REPO / "examples" / "requests.jsonl"
    data = tmp_path / "data"
    first = penny_run(example, data)
    assert first.returncode == 0, first.stdout + first.stderr
    second = penny_run(example, data)
    assert second.returncode == 0, second.stdout + second.stderr
    ledgers = [json.loads(outputs_of(run.stdout)["ledger_json"].read_text())
               for run in (first, second)]
    assert ledgers[0]["totals"]["exact_cache_jobs"] == 0
    assert ledgers[0]["totals"]["engine_seconds"] > 0
    totals = ledgers[1]["totals"]
    assert totals["jobs"] == totals["exact_cache_jobs"] == 24
    assert totals["engine_seconds"] == 0 and Decimal(totals["cost_usd"]) == 0
    assert Decimal(totals["cache_saved_usd"]) == Decimal(ledgers[0]["totals"]["cost_usd"])
    # No engine was started: every line was answered before one was needed.
    assert re.search(r"engine start-up seconds\s+│\s+0\.0 ", second.stdout), second.stdout
    results = [[json.loads(line) for line in outputs_of(run.stdout)["results"].read_text()
                .splitlines()] for run in (first, second)]
    assert [r["response"] for r in results[1]] == [r["response"] for r in results[0]]
    assert {r["served_by"] for r in results[1]} == {"exact_cache"}
def test_lines_with_unstorable_text_fail_alone_and_the_good_lines_run(tmp_path: Path) -> None:
    source = tmp_path / "hostile.jsonl"
    source.write_bytes(
        b'{"custom_id": "good-1", "prompt": "What is 2 + 2?", "max_tokens": 8}\n'
        b'{"custom_id": "nul", "prompt": "a \\u0000 b", "max_tokens": 8}\n'
        b'{"custom_id": "surrogate", "prompt": "ok", "metadata": {"k": "\\ud800"}}\n'
        b'{"custom_id": "raw-nul", "prompt": "a \x00 b"}\n'
        b'{"custom_id": "string-number", "prompt": "ok", "max_tokens": "8"}\n'
        + b"[" * 5000 + b"]" * 5000 + b"\n"
        b'{"custom_id": "good-2", "prompt": "Name a colour.", "max_tokens": 8}\n'
    )
    # No time for the calibration probe: it is skipped, the run goes on, and the ledger
    # claims no saving for the lines that ran.
    completed = penny_run(source, tmp_path / "data", PENNY_CALIBRATION_BUDGET_SECONDS="0")
    assert completed.returncode == 1, completed.stdout + completed.stderr  # some failed
    assert "Traceback" not in completed.stderr
    assert "calibration skipped: no time was left" in completed.stderr
    assert "claims no saving" in completed.stderr
    ledger = json.loads(outputs_of(completed.stdout)["ledger_json"].read_text())
    assert ledger["totals"]["unmodelled_jobs"] == 2
    for entry in ledger["entries"]:
        assert entry["calibration_id"] is None
        assert Decimal(entry["naive_cost_usd"]) == Decimal(entry["cost_usd"]) > 0
    results = outputs_of(completed.stdout)["results"].read_text().splitlines()
    by_line = {r["line"]: r for r in map(json.loads, results)}
    assert sorted(by_line) == [1, 2, 3, 4, 5, 6, 7]
    assert by_line[1]["status"] == by_line[7]["status"] == "succeeded"
    for line in (2, 3, 4, 5, 6):
        assert by_line[line]["status"] == "failed"
        assert by_line[line]["error"]["line"] == line
    assert "NUL character" in by_line[2]["error"]["message"]
    assert "metadata.k: contains an unpaired surrogate" in by_line[3]["error"]["message"]
    assert "max_tokens" in by_line[5]["error"]["message"]
    assert "deeper than" in by_line[6]["error"]["message"]


def test_an_unusable_file_prints_only_the_reason(tmp_path: Path) -> None:
    for name, data, reason in (
        ("notes.txt", b'{"prompt": "hi"}\n', "notes.txt: input files must end in .jsonl or .csv"),
        ("empty.jsonl", b"\n\n", "empty.jsonl holds no jobs"),
        ("latin1.jsonl", b'{"prompt": "caf\xe9"}\n', "latin1.jsonl is not UTF-8 text"),
    ):
        source = tmp_path / name
        source.write_bytes(data)
        completed = penny_run(source, tmp_path / "data")
        assert completed.returncode == 2
        assert completed.stdout == ""
        assert completed.stderr.splitlines()[0].startswith(f"penny run: {reason}")
        assert len(completed.stderr.splitlines()) == 1, completed.stderr
