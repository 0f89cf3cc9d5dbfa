"""intake.files: JSONL and CSV input files, one outcome per line."""

from __future__ import annotations

import json

import pytest

from intake.files import LineError, LineOutcome, ParsedLine, parse_input_file
from intake.schema import ChatMessage
from penny.errors import InputFileError


def parsed(outcome: LineOutcome) -> ParsedLine:
    assert isinstance(outcome, ParsedLine), outcome
    return outcome


def failed(outcome: LineOutcome) -> LineError:
    assert isinstance(outcome, LineError), outcome
    return outcome


JSONL_LINES = [
    '{"prompt": "hello", "max_tokens": 5, "custom_id": "first"}',  # 1
    "",  # 2: blank, skipped
    '{"prompt": "unterminated',  # 3
    "[1, 2, 3]",  # 4
    '{"prompt": "x", "max_tokens": -1}',  # 5
    '{"messages": []}',  # 6
    '{"prompt": "p", "messages": [{"role": "user", "content": "m"}]}',  # 7
    "   ",  # 8: whitespace only, skipped
    '{"messages": [{"role": "user", "content": "last"}], "metadata": {"k": 1}}',  # 9
]


def jsonl_outcomes() -> list[LineOutcome]:
    return parse_input_file("input.jsonl", "\n".join(JSONL_LINES).encode())


def test_jsonl_one_outcome_per_non_blank_line() -> None:
    assert [o.line_no for o in jsonl_outcomes()] == [1, 3, 4, 5, 6, 7, 9]


def test_jsonl_good_lines_parse() -> None:
    outcomes = jsonl_outcomes()
    first, last = parsed(outcomes[0]), parsed(outcomes[-1])
    assert (first.request.prompt, first.request.max_tokens) == ("hello", 5)
    assert first.request.custom_id == "first"
    assert last.request.messages == [ChatMessage(role="user", content="last")]
    assert last.request.metadata == {"k": 1}


@pytest.mark.parametrize(
    ("line_no", "code", "fragment"),
    [
        pytest.param(3, "invalid_json", "not valid JSON", id="bad-json"),
        pytest.param(4, "invalid_line", "must be a JSON object", id="not-an-object"),
        pytest.param(5, "invalid_line", "max_tokens:", id="negative-max-tokens"),
        pytest.param(6, "invalid_line", "messages:", id="empty-messages"),
        pytest.param(7, "invalid_line", "exactly one of 'messages' or 'prompt'", id="both"),
    ],
)
def test_jsonl_bad_lines_become_line_errors(line_no: int, code: str, fragment: str) -> None:
    errors = {o.line_no: o for o in jsonl_outcomes() if isinstance(o, LineError)}
    error = errors[line_no]
    assert error.code == code
    assert fragment in error.message
    assert error.raw == JSONL_LINES[line_no - 1]


@pytest.mark.parametrize("name", ["in.JSONL", "in.ndjson", "in.json"])
def test_jsonl_extensions(name: str) -> None:
    outcomes = parse_input_file(name, b'{"prompt": "hi"}\n')
    assert parsed(outcomes[0]).request.prompt == "hi"


def test_jsonl_with_crlf_and_bom() -> None:
    data = '\ufeff{"prompt": "a"}\r\n{"prompt": "b"}\r\n'.encode()
    outcomes = parse_input_file("in.jsonl", data)
    assert [parsed(o).request.prompt for o in outcomes] == ["a", "b"]


def test_jsonl_line_separator_inside_a_string_does_not_split_the_line() -> None:
    first = json.dumps({"prompt": "one\u2028two"}, ensure_ascii=False)
    data = f'{first}\n{{"prompt": "second"}}\n'.encode()
    outcomes = parse_input_file("in.jsonl", data)
    assert [(o.line_no, parsed(o).request.prompt) for o in outcomes] == [
        (1, "one\u2028two"), (2, "second"),
    ]


def test_empty_file_raises() -> None:
    with pytest.raises(InputFileError, match="holds no jobs"):
        parse_input_file("empty.jsonl", b"\n  \n\n")


def test_unknown_extension_raises() -> None:
    with pytest.raises(InputFileError, match=r"notes\.txt"):
        parse_input_file("notes.txt", b'{"prompt": "hi"}\n')


@pytest.mark.parametrize("name", ["bad.jsonl", "bad.csv"])
def test_non_utf8_raises(name: str) -> None:
    with pytest.raises(InputFileError, match="not UTF-8") as caught:
        parse_input_file(name, b'{"prompt": "caf\xe9"}\n')
    assert caught.value.code == "invalid_file"
    assert name in caught.value.message


def csv_outcomes(text: str) -> list[LineOutcome]:
    return parse_input_file("in.csv", text.encode())


def test_csv_good_rows_parse_with_header_as_line_one() -> None:
    outcomes = csv_outcomes(
        "custom_id,prompt,max_tokens,temperature,model,seed\n"
        "r1,What is 2+2?,32,0.5,tiny,7\n"
        "r2,Name a colour,,,,\n"
    )
    first, second = parsed(outcomes[0]), parsed(outcomes[1])
    assert (first.line_no, second.line_no) == (2, 3)
    assert first.request.messages == [ChatMessage(role="user", content="What is 2+2?")]
    assert (first.request.custom_id, first.request.model) == ("r1", "tiny")
    assert (first.request.max_tokens, first.request.temperature, first.request.seed) == (
        32, 0.5, 7,
    )
    # Empty cells fall back to the defaults.
    assert (second.request.max_tokens, second.request.model, second.request.seed) == (
        256, None, None,
    )
    assert second.request.metadata == {}


def test_csv_extra_columns_become_metadata() -> None:
    outcomes = csv_outcomes("prompt,team,project\nhi,blue,\n")
    assert parsed(outcomes[0]).request.metadata == {"team": "blue"}


def test_csv_system_column_builds_a_system_message() -> None:
    outcomes = csv_outcomes("system,prompt\nBe terse.,hi\n  ,plain\n")
    assert parsed(outcomes[0]).request.messages == [
        ChatMessage(role="system", content="Be terse."),
        ChatMessage(role="user", content="hi"),
    ]
    assert parsed(outcomes[1]).request.messages == [ChatMessage(role="user", content="plain")]


def test_csv_blank_lines_are_skipped_but_still_counted() -> None:
    outcomes = csv_outcomes("prompt\na\n\nb\n")
    assert [(o.line_no, parsed(o).request.messages) for o in outcomes] == [
        (2, [ChatMessage(role="user", content="a")]),
        (4, [ChatMessage(role="user", content="b")]),
    ]


def test_csv_row_with_too_many_fields_is_a_line_error() -> None:
    outcomes = csv_outcomes("prompt,team\nok,a\nsurprise,b,c\nfine,d\n")
    error = failed(outcomes[1])
    assert (error.line_no, error.code) == (3, "invalid_line")
    assert "more fields than the header" in error.message
    assert parsed(outcomes[2]).line_no == 4


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        pytest.param("hi,-1", "max_tokens:", id="negative-max-tokens"),
        pytest.param("hi,abc", "max_tokens:", id="non-number-max-tokens"),
        pytest.param(",5", "messages.0.content:", id="empty-prompt"),
    ],
)
def test_csv_schema_violations_are_line_errors(row: str, fragment: str) -> None:
    outcomes = csv_outcomes(f"prompt,max_tokens\nfine,1\n{row}\n")
    error = failed(outcomes[1])
    assert (error.line_no, error.code) == (3, "invalid_line")
    assert fragment in error.message
    assert error.raw == row


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("question,answer\nhi,there\n", id="no-prompt-column"),
        pytest.param("", id="no-header-at-all"),
    ],
)
def test_csv_without_prompt_column_raises(text: str) -> None:
    with pytest.raises(InputFileError, match="'prompt' column"):
        csv_outcomes(text)


def test_csv_header_only_holds_no_jobs() -> None:
    with pytest.raises(InputFileError, match="holds no jobs"):
        csv_outcomes("prompt,max_tokens\n")


def test_csv_with_bom_still_finds_the_prompt_column() -> None:
    outcomes = parse_input_file("in.csv", "\ufeffprompt\nhi\n".encode())
    assert parsed(outcomes[0]).request.messages == [ChatMessage(role="user", content="hi")]


def test_csv_short_row_does_not_sink_the_file() -> None:
    outcomes = csv_outcomes("prompt,max_tokens\nshort\nfull,5\n")
    assert [o.line_no for o in outcomes] == [2, 3]
    assert parsed(outcomes[1]).request.max_tokens == 5


def test_csv_multiline_row_error_names_the_line_it_starts_on() -> None:
    outcomes = csv_outcomes('prompt,max_tokens\n"two\nlines",-1\n')
    assert failed(outcomes[0]).line_no == 2


def test_jsonl_lines_with_unstorable_text_are_line_errors_and_good_lines_stay() -> None:
    lines = [
        '{"prompt": "fine"}',
        '{"prompt": "nul \\u0000 here"}',
        '{"prompt": "ok", "metadata": {"k\\u0000": 1}}',
        '{"prompt": "ok", "metadata": {"a": ["\\ud800"]}}',
        '{"prompt": "raw \x00 byte"}',
        '{"prompt": "ok", "max_tokens": "8"}',
        "[" * 5000 + "]" * 5000,
        '{"prompt": "also fine"}',
    ]
    outcomes = parse_input_file("in.jsonl", "\n".join(lines).encode())
    assert [o.line_no for o in outcomes if isinstance(o, ParsedLine)] == [1, 8]
    errors = {o.line_no: o for o in outcomes if isinstance(o, LineError)}
    assert "prompt: contains a NUL character" in errors[2].message
    assert "metadata.k\\u0000: the key contains a NUL character" in errors[3].message
    assert "metadata.a.0: contains an unpaired surrogate (\\ud800)" in errors[4].message
    assert errors[5].code == "invalid_json" and "Invalid control character" in errors[5].message
    assert "max_tokens: Input should be a valid integer" in errors[6].message
    assert "deeper than 64 levels" in errors[7].message


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        pytest.param("hi,true", "max_tokens: 'true' is not an integer", id="bool-text"),
        pytest.param("hi,8.5", "max_tokens: '8.5' is not an integer", id="fraction"),
        pytest.param("hi\x00there,8", "content: contains a NUL character", id="nul-in-prompt"),
    ],
)
def test_csv_cells_convert_explicitly_with_a_precise_line_error(row: str, fragment: str
                                                                 ) -> None:
    outcomes = csv_outcomes(f"prompt,max_tokens\nfine, 8 \n{row}\n")
    assert parsed(outcomes[0]).request.max_tokens == 8  # a number column's text is a number
    error = failed(outcomes[1])
    assert (error.line_no, error.code) == (3, "invalid_line")
    assert fragment in error.message


def test_csv_number_cells_must_be_finite() -> None:
    outcomes = csv_outcomes("prompt,temperature\nhi,nan\nhi,0.5\n")
    assert "temperature: 'nan' is not a finite number" in failed(outcomes[0]).message
    assert parsed(outcomes[1]).request.temperature == 0.5
