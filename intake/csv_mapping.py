"""Maps a CSV file's columns onto job requests. Pure.

The prompt is a `prompt` column, or a template over several columns
(`"Summarise: {body}"`). `system`, `model`, `cache`, `max_tokens`, `temperature`, `top_p`
and `seed` columns map to those fields (an empty cell leaves the field unset: for `cache`,
the deployment's per-tag policy or `on`), the id column (`custom_id` unless another is named) to
the job's `custom_id`, and every other column becomes a metadata tag.
"""

from __future__ import annotations

import math
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from intake.csv_reader import CsvReader, CsvRow, CsvRowError
from intake.fast_jobs import plain_job
from intake.limits import IntakeLimits
from intake.line_outcome import LineError, LineOutcome, validated_line
from intake.max_tokens_caps import JobCaps
from intake.text import escape_unstorable, unstorable_reason
from models.submissions import NewJob
from penny.errors import InputFileError

NUMBER_FIELDS: dict[str, type[int] | type[float]] = {
    "max_tokens": int, "temperature": float, "top_p": float, "seed": int}
TEXT_FIELDS = ("system", "model", "cache")
DEFAULT_ID_COLUMN = "custom_id"
# A row error's code; a file the reader cannot read past has its own.
BAD_ROW = "invalid_line"
BAD_FILE = "invalid_file"


@dataclass(frozen=True)
class CsvOptions:
    """How to read a CSV input: the caller's column mapping and declared encoding."""

    template: str | None = None
    id_column: str | None = None
    encoding: str | None = None
    # Rows penny cannot use: reject the whole file (False) or queue the good rows and
    # report each bad one as a failed job naming its line (True).
    skip_bad_rows: bool = False


@dataclass(frozen=True)
class CsvMapping:
    header: tuple[str, ...]
    # Literal text and column indexes, in order: the prompt is their concatenation.
    prompt_parts: tuple[str | int, ...]
    id_index: int | None
    fields: tuple[tuple[str, int], ...]  # request field -> column index
    metadata: tuple[int, ...]


def _parse_template(template: str, header: tuple[str, ...]) -> tuple[str | int, ...]:
    reason = unstorable_reason(template)
    if reason is not None:
        raise InputFileError(f"the template {reason}", param="template")
    try:
        pieces = list(string.Formatter().parse(template))
    except ValueError as error:
        raise InputFileError(f"template {template!r}: {error} (write a literal brace "
                             "twice: '{{' or '}}')", param="template") from None
    parts: list[str | int] = []
    for literal, column, spec, conversion in pieces:
        if literal:
            parts.append(literal)
        if column is None:
            continue
        if spec or conversion:
            raise InputFileError(f"template {template!r}: {{{column}}} may not carry a "
                                 "format or conversion; name the column alone",
                                 param="template")
        if column not in header:
            raise InputFileError(
                f"template {template!r} names column {column!r}, which the header lacks "
                f"(columns: {', '.join(header)})", param="template")
        parts.append(header.index(column))
    if not any(isinstance(p, int) for p in parts):
        raise InputFileError(f"template {template!r} names no column", param="template")
    return tuple(parts)


def csv_mapping(header: tuple[str, ...], options: CsvOptions) -> CsvMapping:
    """The mapping for `header`; InputFileError when the options do not fit it."""
    if options.template is not None:
        prompt_parts = _parse_template(options.template, header)
    elif "prompt" in header:
        prompt_parts = (header.index("prompt"),)
    else:
        raise InputFileError("a CSV input needs a header row with a 'prompt' column, or a "
                             "template naming its columns (\"Summarise: {body}\")",
                             param="template")
    id_index: int | None = None
    if options.id_column is not None:
        if options.id_column not in header:
            raise InputFileError(f"id column {options.id_column!r} is not in the header "
                                 f"(columns: {', '.join(header)})", param="id_column")
        id_index = header.index(options.id_column)
    elif DEFAULT_ID_COLUMN in header:
        id_index = header.index(DEFAULT_ID_COLUMN)
    fields = tuple((name, header.index(name)) for name in (*TEXT_FIELDS, *NUMBER_FIELDS)
                   if name in header)
    used = {i for i in prompt_parts if isinstance(i, int)} | {i for _, i in fields}
    if id_index is not None:
        used.add(id_index)
    metadata = tuple(i for i in range(len(header)) if i not in used)
    return CsvMapping(header, prompt_parts, id_index, fields, metadata)


class _BadCell(ValueError):
    pass


def _number(column: str, kind: type[int] | type[float], value: str) -> int | float:
    """A CSV cell is text; a number column's text must read as that number exactly."""
    try:
        number: int | float = kind(value.strip())
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise _BadCell(f"{column}: {escape_unstorable(value)!r} is not {noun}") from None
    if not math.isfinite(number):
        raise _BadCell(f"{column}: {escape_unstorable(value.strip())!r} is not a finite number")
    return number


def row_payload(mapping: CsvMapping, cells: tuple[str, ...]) -> dict[str, Any]:
    """The job request body one row asks for (validated by the caller)."""
    prompt = "".join(p if isinstance(p, str) else cells[p] for p in mapping.prompt_parts)
    payload: dict[str, Any] = {}
    system = ""
    for name, index in mapping.fields:
        value = cells[index]
        if name == "system":
            system = value.strip()
        elif name in NUMBER_FIELDS:
            if value.strip():
                payload[name] = _number(name, NUMBER_FIELDS[name], value)
        elif value:
            payload[name] = value
    if mapping.id_index is not None and cells[mapping.id_index]:
        payload["custom_id"] = cells[mapping.id_index]
    user = {"role": "user", "content": prompt}
    payload["messages"] = ([{"role": "system", "content": system}, user] if system
                           else [user])
    tags = {mapping.header[i]: cells[i] for i in mapping.metadata if cells[i]}
    if tags:
        payload["metadata"] = tags
    return payload


def raw_row(cells: Iterable[str]) -> str:
    return ",".join(cells)


def row_outcome(mapping: CsvMapping, row: CsvRow) -> LineOutcome:
    raw = raw_row(row.cells)
    try:
        payload = row_payload(mapping, row.cells)
    except _BadCell as error:
        return LineError(row.line_no, BAD_ROW, str(error), raw)
    # Header names were checked when the file was opened; the payload's other strings
    # are its cells.
    storable = all(unstorable_reason(cell) is None for cell in row.cells)
    return validated_line(row.line_no, raw, payload, storable=storable)


def plain_row_job(mapping: CsvMapping, row: CsvRow, limits: IntakeLimits,
                  caps: JobCaps | None = None) -> NewJob | None:
    """The job a valid, plain row makes, its cells kept as its input row and the tenant's
    `caps` applied, without the general validator (see intake.fast_jobs); None:
    `row_outcome` and the general path decide, and word any error."""
    # Joining cells makes no NUL or surrogate that no cell holds.
    if unstorable_reason("".join(row.cells)) is not None:
        return None
    try:
        payload = row_payload(mapping, row.cells)
    except _BadCell:
        return None
    return plain_job(payload, row.line_no, limits, input_row=row.cells, caps=caps)


def csv_outcomes(reader: CsvReader, mapping: CsvMapping) -> Iterator[LineOutcome]:
    """One outcome per row; a structural error ends the file with a `BAD_FILE` error."""
    for item in reader:
        if isinstance(item, CsvRowError):
            yield LineError(item.line_no, BAD_FILE if item.fatal else BAD_ROW, item.message,
                            item.raw)
        else:
            yield row_outcome(mapping, item)


def refuse_bad_rows(name: str, errors: list[LineError], rows: int, limit: int = 1000
                    ) -> InputFileError:
    """The error that rejects a whole file, naming each bad row (up to `limit`)."""
    details: list[dict[str, Any]] = [
        {"line": e.line_no, "code": e.code,
         # A structural error's message already says where it was found.
         "message": e.message if e.code == BAD_FILE else f"line {e.line_no}: {e.message}"}
        for e in errors[:limit]]
    if len(errors) > limit:
        details.append({"line": None, "code": "truncated",
                        "message": f"... and {len(errors) - limit} more"})
    if any(e.code == BAD_FILE for e in errors):
        fatal = next(e for e in errors if e.code == BAD_FILE)
        head = f"{name}: cannot be read past line {fatal.line_no}; nothing was queued"
    else:
        head = (f"{name}: {len(errors)} of {rows} rows are invalid; nothing was queued "
                "(fix them, or ask to skip bad rows)")
    return InputFileError(head, details=details)
