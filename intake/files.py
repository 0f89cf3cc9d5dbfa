"""Turns an input file (JSONL or CSV) into job requests, one outcome per line.

A bad JSONL line never sinks the file: it becomes a `LineError` that names the line, and
the submission carries it through to the results as a failed job. A CSV file with bad rows
is rejected whole unless the caller asks to skip them (`CsvOptions.skip_bad_rows`).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import IO

from intake.csv_mapping import CsvOptions, csv_mapping, csv_outcomes, refuse_bad_rows
from intake.csv_reader import CsvReader
from intake.line_outcome import (
    LineError,
    LineOutcome,
    ParsedLine,
    describe_validation_error,
    validated_line,
)
from intake.text import DEFAULT_MAX_JSON_DEPTH, load_json
from penny.errors import InputFileError, InvalidJson

__all__ = ["LineError", "LineOutcome", "ParsedLine", "describe_validation_error",
           "parse_csv", "parse_input_file", "parse_jsonl", "read_csv"]

DEFAULT_MAX_CELL_CHARS = 200_000  # PENNY_MAX_PROMPT_CHARS's default


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
        yield validated_line(line_no, raw, payload)


def read_csv(stream: IO[bytes], name: str, options: CsvOptions,
             max_cell_chars: int = DEFAULT_MAX_CELL_CHARS) -> Iterator[LineOutcome]:
    """Every row's outcome, streamed. InputFileError at once when the header or the
    options are unusable; a structural error later ends the stream with a `invalid_file`
    line error."""
    reader = CsvReader(stream, name=name, max_cell_chars=max_cell_chars,
                       encoding=options.encoding)
    return csv_outcomes(reader, csv_mapping(reader.header, options))


def parse_csv(text: str, options: CsvOptions | None = None) -> Iterator[LineOutcome]:
    """`read_csv` over text already in memory (UTF-8 is how it is read back)."""
    return read_csv(io.BytesIO(text.encode()), "input", options or CsvOptions(skip_bad_rows=True))


def checked_csv(outcomes: Iterator[LineOutcome], name: str, options: CsvOptions
                ) -> list[LineOutcome]:
    """All of a CSV file's outcomes, or InputFileError naming every bad row when the file
    is to be rejected whole (by default, or whenever the reader could not finish it)."""
    kept = list(outcomes)
    errors = [o for o in kept if isinstance(o, LineError)]
    fatal = any(e.code == "invalid_file" for e in errors)
    if errors and (fatal or not options.skip_bad_rows):
        raise refuse_bad_rows(name, errors, len(kept))
    return kept


def parse_input_file(
    name: str, data: bytes, max_depth: int = DEFAULT_MAX_JSON_DEPTH,
    csv_options: CsvOptions | None = None, max_cell_chars: int = DEFAULT_MAX_CELL_CHARS,
) -> list[LineOutcome]:
    """Every line's outcome. A CSV file follows `csv_options` (by default its bad rows are
    line errors, as a JSONL file's are)."""
    lowered = name.lower()
    if lowered.endswith(".csv"):
        options = csv_options or CsvOptions(skip_bad_rows=True)
        outcomes = checked_csv(read_csv(io.BytesIO(data), name, options, max_cell_chars),
                               name, options)
    elif lowered.endswith((".jsonl", ".ndjson", ".json")):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            line = data[: error.start].count(b"\n") + 1
            raise InputFileError(f"{name} is not UTF-8 text (line {line}, byte "
                                 f"{error.start})") from error
        outcomes = list(parse_jsonl(text, max_depth))
    else:
        raise InputFileError(f"{name}: input files must end in .jsonl or .csv")
    if not outcomes:
        raise InputFileError(f"{name} holds no jobs")
    return outcomes
