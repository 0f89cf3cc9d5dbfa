"""CSV cells that are safe to open in a spreadsheet. Pure.

A spreadsheet reads a cell starting with `=`, `+`, `-` or `@` as a formula (and a leading
tab or carriage return can hide one), so a `custom_id` of `=HYPERLINK(...)` or a model's
answer would run as one when a user opens `ledger.csv`. Such a cell is written with a
leading apostrophe, which spreadsheets show as text and do not evaluate (OWASP's advice
for CSV injection). Numbers penny writes itself (a negative amount, say) are left alone.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

_FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """`value` as a cell: text that a spreadsheet would evaluate gets a leading `'`."""
    if value is None or isinstance(value, bool | int | float | Decimal):
        return value
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_LEADS) else text


def csv_bytes(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> bytes:
    """A CSV document with a header row; every cell made safe. Every cell holding a line
    break or a carriage return is quoted, so a lone CR never reads as a row end."""
    buffer = io.StringIO()
    plain = csv.writer(buffer, lineterminator="\n")
    # The csv module quotes a cell holding "\n" but not one holding only "\r" when rows
    # end in "\n"; a spreadsheet would break the row there. Such a row is quoted whole.
    quoted = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL)
    for cells in ([safe_cell(c) for c in columns],
                  *([safe_cell(row.get(c)) for c in columns] for row in rows)):
        writer = quoted if any(isinstance(c, str) and "\r" in c for c in cells) else plain
        writer.writerow(cells)
    return buffer.getvalue().encode()


# What penny adds after a CSV upload's own columns.
RESULT_COLUMNS = ("output", "status", "error", "cost_usd")


def result_columns(input_columns: Sequence[str]) -> list[str]:
    """The input's columns, then penny's; one of penny's that the input already uses is
    written `penny_<name>` so no column is ever ambiguous."""
    taken = set(input_columns)
    return [*input_columns, *(f"penny_{c}" if c in taken else c for c in RESULT_COLUMNS)]


def results_csv(input_columns: Sequence[str], records: Sequence[Any]) -> bytes:
    """A CSV upload's results: each row as it came in, then its output, status, error and
    cost (`records` are `ledger.report.JobRecord`s, in line order)."""
    columns = result_columns(input_columns)
    width = len(input_columns)

    def rows() -> Iterable[dict[str, Any]]:
        for r in records:
            cells = list(r.input_row or [])[:width]
            cells += [""] * (width - len(cells))
            error = r.error.get("message") if r.error else None
            added = (r.text if r.error is None else None, r.status, error,
                     f"{r.cost_usd:f}" if r.billed else None)
            yield dict(zip(columns, [*cells, *added], strict=True))

    return csv_bytes(columns, rows())
