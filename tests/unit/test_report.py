"""ledger.report: results JSONL, the ledger as JSON and CSV, and totals."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from typing import Any

import pytest

from ledger.attribution import MECHANISMS
from ledger.report import (
    LEDGER_COLUMNS,
    JobRecord,
    ledger_csv,
    ledger_json,
    results_jsonl,
    totals,
)


def record(job_id: str, line: int, **changes: Any) -> JobRecord:
    fields: dict[str, Any] = {
        "job_id": job_id, "line": line, "custom_id": f"c-{job_id}", "model": "tiny",
        "status": "succeeded", "tags": {"team": "x"}, "text": f"answer {job_id}",
        "finish_reason": "stop", "error": None, "input_tokens": 100, "cached_tokens": 40,
        "output_tokens": 20, "engine_seconds": 0.5, "cost_usd": Decimal("0.0000138889"),
        "list_cost_usd": Decimal("0.0000240000"), "billed": True,
    }
    # Unless a test says otherwise: no saving modelled, so the naive cost is the cost.
    fields["naive_cost_usd"] = changes.get("cost_usd", fields["cost_usd"])
    fields.update(changes)
    return JobRecord(**fields)


OK_1 = record("j1", 1)
OK_2 = record(
    "j2", 2, custom_id=None, text="héllo ✓", finish_reason="length", input_tokens=300,
    cached_tokens=0, output_tokens=50, engine_seconds=1.25,
    cost_usd=Decimal("0.0000347222"), list_cost_usd=Decimal("0.0000750000"),
)
BAD_LINE = record(
    "j3", 3, custom_id=None, status="failed", text=None, finish_reason=None,
    error={"code": "invalid_json", "message": "not valid JSON", "line": 3},
    input_tokens=7, cached_tokens=3, output_tokens=2, engine_seconds=9.0,
    cost_usd=Decimal("1"), list_cost_usd=Decimal("1"), billed=False,
)
CANCELLED = record(
    "j4", 4, status="cancelled", text=None, finish_reason=None,
    error={"code": "cancelled", "message": "cancelled by the client"},
    input_tokens=0, cached_tokens=0, output_tokens=0, engine_seconds=0.0,
    cost_usd=Decimal(0), list_cost_usd=Decimal(0), billed=False,
)
RECORDS = [OK_1, OK_2, BAD_LINE, CANCELLED]


def test_results_jsonl_has_one_line_per_job_including_failures() -> None:
    body = results_jsonl(RECORDS)
    assert body.endswith(b"\n")
    lines = [json.loads(line) for line in body.decode().splitlines()]
    assert [(r["job_id"], r["line"], r["status"]) for r in lines] == [
        ("j1", 1, "succeeded"), ("j2", 2, "succeeded"), ("j3", 3, "failed"),
        ("j4", 4, "cancelled"),
    ]


def test_results_jsonl_success_line() -> None:
    first = json.loads(results_jsonl([OK_1]))
    assert first == {
        "job_id": "j1", "line": 1, "custom_id": "c-j1", "model": "tiny", "status": "succeeded",
        "metadata": {"team": "x"},
        "response": {"text": "answer j1", "finish_reason": "stop"},
        "usage": {"prompt_tokens": 100, "cached_tokens": 40, "completion_tokens": 20},
        "served_by": "engine", "source_job_id": None,
        "error": None,
    }


def test_results_jsonl_failure_line_carries_the_error_not_a_response() -> None:
    failed = json.loads(results_jsonl([BAD_LINE]))
    assert failed["response"] is None
    assert failed["error"] == {"code": "invalid_json", "message": "not valid JSON", "line": 3}
    assert "usage" not in failed


def test_results_jsonl_keeps_non_ascii_text_as_utf8() -> None:
    body = results_jsonl([OK_2])
    assert "héllo ✓".encode() in body
    assert json.loads(body)["response"]["text"] == "héllo ✓"


def test_ledger_json_lists_only_billed_jobs() -> None:
    document = json.loads(ledger_json("sub-1", RECORDS))
    assert document["submission_id"] == "sub-1"
    assert [e["job_id"] for e in document["entries"]] == ["j1", "j2"]
    assert list(document["entries"][0]) == list(LEDGER_COLUMNS)
    assert document["entries"][1]["cost_usd"] == "0.0000347222"
    assert document["entries"][1]["engine_seconds"] == 1.25


def test_ledger_json_totals() -> None:
    summary = json.loads(ledger_json("sub-1", RECORDS))["totals"]
    assert summary == {
        "naive_cost_usd": "0.0000486111", "saved_vs_naive_usd": "0.0000000000",
        "saved_vs_naive_fraction": 0.0,
        "savings_by_mechanism_usd": {m: "0" for m in MECHANISMS}, "unexplained_usd": "0",
        "jobs": 4, "succeeded": 2, "failed": 2, "input_tokens": 400, "cached_tokens": 40,
        "output_tokens": 70, "engine_seconds": 1.75, "cost_usd": "0.0000486111",
        "list_cost_usd": "0.0000990000", "single_flight_saved_usd": "0",
        "single_flight_jobs": 0, "cache_saved_usd": "0", "exact_cache_jobs": 0,
        "unmodelled_jobs": 2,
        "escalated_attempts": 0,
        "semantic_cache_jobs": 0,
    }


# Eight mechanisms and the unexplained part at 0; no baseline, card or calibration named.
NOTHING_SAVED = ["0"] * (len(MECHANISMS) + 1) + ["", "", ""]  # savings, unexplained


def test_ledger_csv_header_and_rows() -> None:
    rows = list(csv.reader(io.StringIO(ledger_csv(RECORDS).decode())))
    assert tuple(rows[0]) == LEDGER_COLUMNS
    assert rows[1:] == [
        ["j1", "1", "c-j1", "tiny", "succeeded", "100", "40", "20", "0.5", "0.0000138889",
         "0.0000240000", "engine", "0", "0", "", "0.0000138889", *NOTHING_SAVED, "", "", ""],
        ["j2", "2", "", "tiny", "succeeded", "300", "0", "50", "1.25", "0.0000347222",
         "0.0000750000", "engine", "0", "0", "", "0.0000347222", *NOTHING_SAVED, "", "", ""],
    ]


def test_ledger_csv_with_nothing_billed_is_just_the_header() -> None:
    assert ledger_csv([BAD_LINE, CANCELLED]).decode() == ",".join(LEDGER_COLUMNS) + "\n"


def test_totals_count_every_job_but_sum_only_billed_ones() -> None:
    result = totals(RECORDS)
    assert (result.jobs, result.succeeded, result.failed) == (4, 2, 2)
    assert (result.input_tokens, result.cached_tokens, result.output_tokens) == (400, 40, 70)
    assert result.engine_seconds == 1.75
    assert result.cost_usd == Decimal("0.0000486111")
    assert result.list_cost_usd == Decimal("0.0000990000")
    assert result.cached_share == pytest.approx(0.1)


def test_totals_of_nothing() -> None:
    result = totals([])
    assert (result.jobs, result.succeeded, result.failed, result.input_tokens) == (0, 0, 0, 0)
    assert result.cost_usd == Decimal(0)
    assert result.cached_share == 0.0


def test_billed_failure_is_charged_and_counted_as_failed() -> None:
    burnt = record("j5", 5, status="failed", error={"code": "engine_error", "message": "x"})
    result = totals([OK_1, burnt])
    assert (result.succeeded, result.failed) == (1, 1)
    assert result.input_tokens == 200
    assert result.cost_usd == Decimal("0.0000277778")
    assert [e["job_id"] for e in json.loads(ledger_json("s", [OK_1, burnt]))["entries"]] == [
        "j1", "j5",
    ]


def test_tiny_amounts_stay_plain_decimals() -> None:
    # An embedding of a few tokens costs fractions of a micro-dollar; the database hands
    # such amounts back as Decimal("2.200E-7"), which str() would write just like that.
    tiny = record("j5", 5, cost_usd=Decimal("5.56E-8"), list_cost_usd=Decimal("2.200E-7"),
                  single_flight_saved_usd=Decimal("0E-10"))
    entry = json.loads(ledger_json("sub-1", [tiny]))["entries"][0]
    assert (entry["cost_usd"], entry["list_cost_usd"]) == ("0.0000000556", "0.0000002200")
    assert entry["single_flight_saved_usd"] == "0.0000000000"
    row = list(csv.reader(io.StringIO(ledger_csv([tiny]).decode())))[1]
    assert row[9:11] == ["0.0000000556", "0.0000002200"]


def test_cache_hits_and_copies_are_counted_apart_with_their_savings() -> None:
    hit = record("j5", 5, served_by="exact_cache", engine_seconds=0.0, cost_usd=Decimal(0),
                 cache_saved_usd=Decimal("0.0000138889"), source_job_id="j1")
    copy = record("j6", 6, served_by="single_flight", engine_seconds=0.0, cost_usd=Decimal(0),
                  single_flight_saved_usd=Decimal("0.0000138889"), source_job_id="j1")
    result = totals([OK_1, hit, copy])
    assert (result.exact_cache_jobs, result.single_flight_jobs) == (1, 1)
    assert result.cache_saved_usd == result.single_flight_saved_usd == Decimal("0.0000138889")
    assert result.cost_usd == OK_1.cost_usd
    line = json.loads(results_jsonl([hit]))
    assert (line["served_by"], line["source_job_id"]) == ("exact_cache", "j1")
    rows = list(csv.DictReader(io.StringIO(ledger_csv([hit]).decode())))
    assert (rows[0]["served_by"], rows[0]["cache_saved_usd"], rows[0]["source_job_id"]) == (
        "exact_cache", "0.0000138889", "j1")


def test_semantic_hits_name_their_entry_and_similarity() -> None:
    hit = record("j7", 7, served_by="semantic_cache", engine_seconds=0.0, cost_usd=Decimal(0),
                 cache_saved_usd=Decimal("0.0000138889"), source_job_id="j1",
                 cache_entry_id="e1", cache_similarity=0.91)
    assert totals([OK_1, hit]).semantic_cache_jobs == 1
    line = json.loads(results_jsonl([hit]))
    assert (line["served_by"], line["cache_entry_id"], line["cache_similarity"]) == (
        "semantic_cache", "e1", 0.91)
    assert "cache_entry_id" not in json.loads(results_jsonl([OK_1]))
    rows = list(csv.DictReader(io.StringIO(ledger_csv([hit]).decode())))
    assert (rows[0]["cache_entry_id"], rows[0]["cache_similarity"]) == ("e1", "0.91")
