"""intake.text: what Postgres cannot store, and JSON documents read with a precise error."""

from __future__ import annotations

from typing import Any

import pytest

from intake.text import escape_unstorable, load_json, unstorable_paths, unstorable_reason
from penny.errors import InvalidJson


@pytest.mark.parametrize("text", ["plain", "café ☕ 😀", "line\u2028sep", "\\u0000 as text", ""])
def test_storable_text(text: str) -> None:
    assert unstorable_reason(text) is None
    assert escape_unstorable(text) == text


@pytest.mark.parametrize(
    ("text", "reason", "escaped"),
    [("a\x00b", "NUL character", "a\\u0000b"),
     ("x\ud800", "unpaired surrogate (\\ud800)", "x\\ud800"),
     ("\udfff😀", "unpaired surrogate (\\udfff)", "\\udfff😀")],
)
def test_unstorable_text(text: str, reason: str, escaped: str) -> None:
    assert reason in (unstorable_reason(text) or "")
    assert escape_unstorable(text) == escaped
    assert unstorable_reason(escape_unstorable(text)) is None


def test_unstorable_paths_name_keys_values_and_list_items() -> None:
    document: Any = {"a": ["ok", "x\x00"], "b\ud800": 1, "c": {"d": "\udc00"}, "e": 3}
    assert [path for path, _ in unstorable_paths(document)] == ["a.1", "b\\ud800", "c.d"]
    assert list(unstorable_paths({"fine": ["text", 1, None]})) == []


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("data", "message"),
    [(b'{"a": "caf\xe9"}', "not UTF-8 text: byte 0xe9 at offset 10"),
     (b'{"a": }', "not valid JSON: Expecting value at line 1 column 7"),
     (b'{"a": NaN}', "NaN is not a JSON value"),
     (b'[Infinity]', "Infinity is not a JSON value"),
     (nested(10_000).encode(), "deeper than 8 levels"),
     (nested(9).encode(), "deeper than 8 levels"),
     ("1" * 5000, "not valid JSON: Exceeds the limit")],
)
def test_load_json_says_what_is_wrong(data: bytes | str, message: str) -> None:
    with pytest.raises(InvalidJson) as caught:
        load_json(data, max_depth=8)
    assert message in caught.value.message


def test_load_json_reads_documents_up_to_the_depth() -> None:
    assert load_json(nested(8), max_depth=8) == load_json(nested(8).encode(), max_depth=8)
    assert load_json('{"a": [1, {"b": "\\u0000"}]}', max_depth=3) == {"a": [1, {"b": "\x00"}]}


def test_brackets_inside_strings_neither_hide_nor_fake_depth() -> None:
    # Brackets in strings count toward the quick bound only: the nesting decides.
    shallow = '{"a": "' + "[{" * 20 + '"}'
    assert load_json(shallow, max_depth=2) == {"a": "[{" * 20}
    with pytest.raises(InvalidJson):
        load_json('{"a": [[' + '"' + "x" * 10 + '"' + "]]}", max_depth=2)
    with pytest.raises(InvalidJson):  # few brackets in all, yet one too deep
        load_json(nested(3), max_depth=2)
