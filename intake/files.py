"""Turns an input file (JSONL or CSV) into job requests, one outcome per line.

A bad line never sinks the file: it becomes a `LineError` that names the line, and the
submission carries it through to the results as a failed job.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from intake.schema import JobRequest
from intake.structured import field_path
from intake.text import DEFAULT_MAX_JSON_DEPTH, escape_unstorable, load_json, unstorable_paths
from penny.errors import InputFileError, InvalidJson

# CSV columns that map onto request fields; every other column becomes a metadata tag.
_CSV_NUMBER_FIELDS = {"max_tokens": int, "temperature": float, "top_p": float, "seed": int}
_CSV_TEXT_FIELDS = {"prompt", "system", "model", "custom_id"}


@dataclass(frozen=True)
class ParsedLine:
    line_no: int
    request: JobRequest


@dataclass(frozen=True)
class LineError:
    line_no: int
    code: str
    message: str
    raw: str


LineOutcome = ParsedLine | LineError


def describe_validation_error(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        # A location can hold a client's key verbatim; the message is stored.
        location = escape_unstorable(".".join(str(p) for p in field_path(item["loc"]))) or "line"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)


def _validated(line_no: int, raw: str, payload: Any) -> LineOutcome:
    if not isinstance(payload, dict):
        return LineError(line_no, "invalid_line", "each line must be a JSON object", raw)
    # Anywhere in the line, keys included: a bad key would otherwise be echoed into the
    # line's stored error message.
    unstorable = [f"{path}: {reason}" for path, reason in unstorable_paths(payload)]
    if unstorable:
        return LineError(line_no, "invalid_line", "; ".join(unstorable), raw)
    try:
        return ParsedLine(line_no, JobRequest.model_validate(payload))
    except ValidationError as error:
        return LineError(line_no, "invalid_line", describe_validation_error(error), raw)


def parse_jsonl(text: str, max_depth: int) -> Iterator[LineOutcome]:
    # Split on "\n" only: str.splitlines() also breaks at U+2028 and friends, which JSON
    # allows raw inside strings, and would cut one valid line in two.
    for line_no, raw_line in enumerate(text.split("\n"), start=1):
        raw = raw_line.removesuffix("\r")
        if not raw.strip():
            continue
        try:
            payload = load_json(raw, max_depth, what="the line")
        except InvalidJson as error:
            yield LineError(line_no, "invalid_json", error.message, raw)
            continue
        yield _validated(line_no, raw, payload)


class _BadCell(ValueError):
    pass


def _number(column: str, value: str) -> int | float:
    """A CSV cell is text; a number column's text must read as that number exactly."""
    kind = _CSV_NUMBER_FIELDS[column]
    try:
        number: int | float = kind(value.strip())
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise _BadCell(f"{column}: {escape_unstorable(value)!r} is not {noun}") from None
    if not math.isfinite(number):
        raise _BadCell(f"{column}: {escape_unstorable(value.strip())!r} is not a finite number")
    return number


def _csv_row_to_payload(row: dict[str, str | None]) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    tags: dict[str, str] = {}
    system = (row.get("system") or "").strip()
    prompt = row.get("prompt") or ""
    for column, cell in row.items():
        value = cell or ""  # a short row leaves its last cells missing (None)
        if column in _CSV_TEXT_FIELDS - {"prompt", "system"} and value:
            payload[column] = value
        elif column in _CSV_NUMBER_FIELDS and value.strip():
            payload[column] = _number(column, value)
        elif column not in _CSV_TEXT_FIELDS and column not in _CSV_NUMBER_FIELDS and value:
            tags[column] = value
    if system:
        payload["messages"] = [
            {"role": "system", "content": system},
            {"role": "user", "content": prompt},
        ]
    else:
        payload["messages"] = [{"role": "user", "content": prompt}]
    if tags:
        payload["metadata"] = tags
    return payload


def parse_csv(text: str) -> Iterator[LineOutcome]:
    # newline="": the csv module reads line ends itself (a bare CR too, and newlines inside
    # quoted cells), as its documentation asks.
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames is None or "prompt" not in reader.fieldnames:
        raise InputFileError("a CSV input needs a header row with a 'prompt' column")
    for row in reader:
        # Line numbers count the header as line 1, as a spreadsheet shows them, and name the
        # line a row starts on: reader.line_num is where it ended, after any quoted newlines.
        cells = [v for v in row.values() if isinstance(v, str)]
        line_no = reader.line_num - sum(cell.count("\n") for cell in cells)
        if None in row:
            raw = ",".join(str(v) for v in row.values())
            yield LineError(line_no, "invalid_line", "row has more fields than the header", raw)
            continue
        raw = ",".join(v or "" for v in row.values())
        try:
            payload = _csv_row_to_payload(row)
        except _BadCell as error:
            yield LineError(line_no, "invalid_line", str(error), raw)
            continue
        yield _validated(line_no, raw, payload)


def parse_input_file(
    name: str, data: bytes, max_depth: int = DEFAULT_MAX_JSON_DEPTH
) -> list[LineOutcome]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputFileError(f"{name} is not UTF-8 text (byte {error.start})") from error
    lowered = name.lower()
    if lowered.endswith(".csv"):
        outcomes = list(parse_csv(text))
    elif lowered.endswith((".jsonl", ".ndjson", ".json")):
        outcomes = list(parse_jsonl(text, max_depth))
    else:
        raise InputFileError(f"{name}: input files must end in .jsonl or .csv")
    if not outcomes:
        raise InputFileError(f"{name} holds no jobs")
    return outcomes
