"""What reading one line of an input file gives: a job request, or an error naming the line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from intake.schema import JobRequest
from intake.structured import field_path
from intake.text import escape_unstorable, unstorable_paths


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


def validated_line(line_no: int, raw: str, payload: Any) -> LineOutcome:
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
