"""ledger.spreadsheet: every CSV cell penny writes is safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest

from ledger.spreadsheet import csv_bytes, safe_cell


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("=1+1", "'=1+1"),
        ("+f2", "'+f2"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=cmd", "'\t=cmd"),
        ("\r=cmd", "'\r=cmd"),
        ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
        ("plain text", "plain text"),
        ("a=b", "a=b"),
        ("", ""),
    ],
)
def test_formula_leading_text_is_neutralised(cell: str, written: str) -> None:
    assert safe_cell(cell) == written


def test_numbers_penny_writes_stay_numbers() -> None:
    assert safe_cell(-1) == -1
    assert safe_cell(Decimal("-0.5")) == Decimal("-0.5")
    assert safe_cell(None) is None


def test_a_lone_carriage_return_is_quoted_and_reads_back_as_one_row() -> None:
    data = csv_bytes(["id", "text"], [{"id": "a", "text": "one\rtwo"}, {"id": "b", "text": "x"}])
    assert b'"one\rtwo"' in data
    rows = list(csv.reader(io.StringIO(data.decode(), newline="")))
    assert rows == [["id", "text"], ["a", "one\rtwo"], ["b", "x"]]


def test_hostile_cells_read_back_as_text_with_the_apostrophe() -> None:
    data = csv_bytes(["custom_id"], [{"custom_id": "=1+1"}, {"custom_id": "+f2"}])
    assert list(csv.DictReader(io.StringIO(data.decode()))) == [
        {"custom_id": "'=1+1"}, {"custom_id": "'+f2"}]
