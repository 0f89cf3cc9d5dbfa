"""Text penny can store, and JSON documents it can read. Pure.

Postgres refuses two kinds of text a JSON parser happily produces: the NUL character
(`\\u0000`, in TEXT and in JSONB alike) and lone UTF-16 surrogates (`"\\ud800"` decodes to a
Python string that cannot be encoded as UTF-8). Either one would fail the insert after the
request was accepted, so intake refuses them up front, naming the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from penny.errors import InvalidJson

_SURROGATE = re.compile("[\ud800-\udfff]")
# PENNY_MAX_JSON_DEPTH's default. A job is about 4 levels deep; metadata may nest more.
DEFAULT_MAX_JSON_DEPTH = 64


def unstorable_reason(text: str) -> str | None:
    """Why `text` cannot be stored, or None when it can."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which cannot be stored"
    if not text.isascii():
        found = _SURROGATE.search(text)
        if found is not None:
            return (f"contains an unpaired surrogate (\\u{ord(found.group()):04x}), "
                    "which is not valid Unicode text")
    return None


def escape_unstorable(text: str) -> str:
    """`text` with NULs and lone surrogates written as escapes, for echoing user input back
    inside an error record (the record itself must be storable)."""
    if unstorable_reason(text) is None:
        return text
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text.replace("\x00", "\\u0000"))


def _storable(text: str) -> str:
    reason = unstorable_reason(text)
    if reason is not None:
        raise PydanticCustomError("unstorable_text", reason)
    return text


def _not_blank(text: str) -> str:
    if not text.strip():
        raise PydanticCustomError("blank_text", "must contain more than whitespace")
    return text


# Every string a job request stores is one of these, so every path in (HTTP, bulk, files,
# batch lines) refuses what Postgres would refuse, in the same validation pass as any other
# field error.
StorableText = Annotated[str, AfterValidator(_storable)]
# A prompt or message: whitespace alone asks the model nothing.
PromptText = Annotated[str, AfterValidator(_storable), AfterValidator(_not_blank)]


def unstorable_paths(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(dotted path, reason) for every string, object key included, in a JSON document
    that cannot be stored. The document comes from `load_json`, so its depth is bounded."""
    if isinstance(value, str):
        reason = unstorable_reason(value)
        if reason is not None:
            yield path or "value", reason
    elif isinstance(value, dict):
        for key, item in value.items():
            key_text = escape_unstorable(str(key))
            where = f"{path}.{key_text}" if path else key_text
            reason = unstorable_reason(str(key))
            if reason is not None:
                yield where, f"the key {reason}"
            yield from unstorable_paths(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from unstorable_paths(item, f"{path}.{index}" if path else str(index))


def _depth_exceeds(document: Any, max_depth: int) -> bool:
    # Iterative, so a deep document cannot exhaust the stack while it is measured.
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, dict | list))
    return False


def _no_constant(name: str) -> Any:
    raise InvalidJson(f"{name} is not a JSON value (JSON has no NaN or Infinity)")


def load_json(data: bytes | str, max_depth: int, what: str = "the request body") -> Any:
    """Parse a JSON document, or raise `InvalidJson` saying exactly what is wrong: bytes
    that are not UTF-8 (and where), a syntax error (and where), NaN or Infinity (which no
    JSON column can hold), or nesting deeper than `max_depth` levels."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise InvalidJson(
                f"{what} is not UTF-8 text: byte 0x{data[error.start]:02x} at offset "
                f"{error.start} cannot be decoded") from None
    else:
        text = data
    try:
        document = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        raise InvalidJson(f"{what} is not valid JSON: {error.msg} at line {error.lineno} "
                          f"column {error.colno}") from None
    except RecursionError:
        raise InvalidJson(f"{what} nests arrays or objects deeper than {max_depth} "
                          "levels") from None
    except ValueError as error:  # e.g. an integer of more than 4300 digits
        raise InvalidJson(f"{what} is not valid JSON: {error}") from None
    # Every array or object opens with a bracket, so a text with no more brackets than
    # `max_depth` (strings may hold more, never fewer) cannot nest deeper: the common
    # small body is not walked.
    if (text.count("{") + text.count("[") > max_depth
            and _depth_exceeds(document, max_depth)):
        raise InvalidJson(f"{what} nests arrays or objects deeper than {max_depth} levels")
    return document
