"""The CSV reader and mapping on hostile files: precise errors naming lines, and memory
that does not grow with the file."""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Iterator

import pytest

from intake.csv_mapping import CsvOptions
from intake.files import LineError, LineOutcome, ParsedLine, checked_csv, read_csv
from penny.errors import InputFileError

STRICT = CsvOptions()
SKIP = CsvOptions(skip_bad_rows=True)


def outcomes(data: bytes, options: CsvOptions = SKIP, max_cell: int = 200_000
             ) -> list[LineOutcome]:
    return checked_csv(read_csv(io.BytesIO(data), "in.csv", options, max_cell), "in.csv",
                       options)


def parsed(outcome: LineOutcome) -> ParsedLine:
    assert isinstance(outcome, ParsedLine), outcome
    return outcome


def failed(outcome: LineOutcome) -> LineError:
    assert isinstance(outcome, LineError), outcome
    return outcome


def prompts(found: list[LineOutcome]) -> list[tuple[int, str]]:
    return [(o.line_no, parsed(o).request.messages[-1].content)  # type: ignore[index]
            for o in found]


def test_utf8_with_bom_and_crlf_line_ends() -> None:
    data = "\ufeffcustom_id,prompt\r\na,hi\r\nb,there\r\n".encode()
    found = outcomes(data)
    assert prompts(found) == [(2, "hi"), (3, "there")]
    assert parsed(found[0]).request.custom_id == "a"


def test_quoted_newlines_stay_in_the_cell_and_lines_count_on() -> None:
    data = b'prompt,custom_id\n"one\ntwo\r\nthree",a\nnext,b\n'
    assert prompts(outcomes(data)) == [(2, "one\ntwo\r\nthree"), (5, "next")]


def test_a_lone_carriage_return_ends_a_row() -> None:
    assert prompts(outcomes(b"prompt\rfirst\rsecond\r")) == [(2, "first"), (3, "second")]


def test_latin1_is_refused_naming_the_line_and_column_unless_declared() -> None:
    data = "prompt\nfine\ncaf\u00e9 au lait\n".encode("latin-1")
    with pytest.raises(InputFileError) as caught:
        outcomes(data)
    assert "line 3, column 4" in caught.value.message
    assert "not UTF-8" in caught.value.message and "byte" in caught.value.message
    declared = outcomes(data, CsvOptions(encoding="latin-1"))
    assert prompts(declared)[1] == (3, "caf\u00e9 au lait")


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_is_refused_unless_declared(codec: str) -> None:
    data = "prompt\nhello\nw\u00f6rld\n".encode(codec)
    with pytest.raises(InputFileError, match="looks like UTF-16"):
        outcomes(data)
    assert prompts(outcomes(data, CsvOptions(encoding=codec))) == [(2, "hello"),
                                                                   (3, "w\u00f6rld")]


def test_an_unknown_declared_encoding_is_refused() -> None:
    with pytest.raises(InputFileError, match="unknown encoding 'klingon'"):
        outcomes(b"prompt\nhi\n", CsvOptions(encoding="klingon"))


def test_an_unterminated_quote_rejects_the_file_naming_the_line_it_opens_on() -> None:
    # Before: the quote swallowed the rows after it, 4 rows became 2 jobs, silently.
    data = b'custom_id,prompt\na,"What is 2+2?\nb,Name a colour.\nc,Name a fruit.\nd,ok\n'
    for options in (STRICT, SKIP):  # skipping cannot help: rows after it are a guess
        with pytest.raises(InputFileError, match="cannot be read past line 2") as caught:
            outcomes(data, options)
        (detail,) = caught.value.details
        assert detail["line"] == 2
        assert "never closed" in str(detail["message"])


def test_a_quote_closing_early_names_both_lines() -> None:
    data = b'custom_id,prompt\na,"opened\nb,"closed" here\nc,x\n'
    with pytest.raises(InputFileError) as caught:
        outcomes(data)
    message = str(caught.value.details[0]["message"])
    assert caught.value.details[0]["line"] == 2
    assert "starting on line 2" in message and "on line 3" in message


def test_a_one_megabyte_cell_is_refused_with_the_prompt_limit_not_the_csv_modules() -> None:
    data = b"prompt,custom_id\nshort,a\n" + b"x" * 1_000_000 + b",b\nafter,c\n"
    with pytest.raises(InputFileError) as caught:
        outcomes(data, STRICT)
    message = str(caught.value.details[0]["message"])
    assert caught.value.details[0]["line"] == 3
    assert "longer than 200000 characters" in message
    assert "field limit" not in message


def test_a_cell_over_the_limit_but_under_the_line_limit_is_a_row_error() -> None:
    data = b"prompt\nshort\n" + b"y" * 101 + b"\nafter\n"
    found = outcomes(data, SKIP, max_cell=100)
    assert failed(found[1]).line_no == 3
    assert [o.line_no for o in found if isinstance(o, ParsedLine)] == [2, 4]


def test_a_cell_between_131072_and_the_prompt_limit_is_read() -> None:
    big = "z" * 150_000
    found = outcomes(f"prompt\n{big}\n".encode())
    assert prompts(found) == [(2, big)]


def test_a_line_without_end_is_refused_before_it_is_read_whole() -> None:
    with pytest.raises(InputFileError, match="line 2 is longer than"):
        outcomes(b"prompt\n" + b"q" * 2_000_000, max_cell=1000)


def test_formula_cells_are_read_as_text() -> None:
    found = outcomes(b"custom_id,prompt,team\n=1+1,hi,+f2\n@x,-1,=cmd\n")
    assert parsed(found[0]).request.custom_id == "=1+1"
    assert parsed(found[0]).request.metadata == {"team": "+f2"}
    assert prompts(found)[1] == (3, "-1")


def test_bad_rows_reject_the_file_by_default_naming_every_line() -> None:
    data = b"prompt,max_tokens\nfine,8\n,8\nok,-5\nalso fine,8\nx,y,z\n"
    with pytest.raises(InputFileError, match="3 of 5 rows are invalid") as caught:
        outcomes(data, STRICT)
    assert [d["line"] for d in caught.value.details] == [3, 4, 6]
    found = outcomes(data, SKIP)
    assert [(o.line_no, isinstance(o, ParsedLine)) for o in found] == [
        (2, True), (3, False), (4, False), (5, True), (6, False)]


def test_a_template_builds_the_prompt_from_columns() -> None:
    data = b"title,body,ref\nT1,B1,r1\nT2,B2,r2\n"
    options = CsvOptions(template="Summarise {title}: {body} {{verbatim}}", id_column="ref")
    found = outcomes(data, options)
    assert prompts(found) == [(2, "Summarise T1: B1 {verbatim}"),
                              (3, "Summarise T2: B2 {verbatim}")]
    assert parsed(found[0]).request.custom_id == "r1"
    assert parsed(found[0]).request.metadata == {}  # every column is used


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("Summarise {missing}", "names column 'missing', which the header lacks"),
        ("Summarise {body!r}", "may not carry a format or conversion"),
        ("Summarise {body:>10}", "may not carry a format or conversion"),
        ("Summarise {body", "write a literal brace twice"),
        ("no columns at all", "names no column"),
    ],
)
def test_a_bad_template_is_refused_before_any_row(template: str, fragment: str) -> None:
    with pytest.raises(InputFileError, match="template") as caught:
        outcomes(b"body\nx\n", CsvOptions(template=template))
    assert fragment in caught.value.message


def test_an_id_column_not_in_the_header_is_refused() -> None:
    with pytest.raises(InputFileError, match="id column 'ref' is not in the header"):
        outcomes(b"prompt\nx\n", CsvOptions(id_column="ref"))


def test_per_row_model_system_max_tokens_and_metadata() -> None:
    found = outcomes(b"prompt,system,model,max_tokens,team\nhi,Be terse.,m1,12,blue\n")
    request = parsed(found[0]).request
    assert request.model == "m1" and request.max_tokens == 12
    assert request.metadata == {"team": "blue"}
    assert [m.role for m in request.messages or []] == ["system", "user"]


def test_duplicate_or_blank_header_columns_are_refused() -> None:
    with pytest.raises(InputFileError, match="names column 'prompt' twice"):
        outcomes(b"prompt,prompt\na,b\n")
    with pytest.raises(InputFileError, match="column 2 has no name"):
        outcomes(b"prompt,,x\na,b,c\n")


class _Generated(io.RawIOBase):
    """`rows` CSV rows produced on demand, never held whole."""

    def __init__(self, rows: int) -> None:
        self._lines: Iterator[bytes] = self._make(rows)
        self._pending = b""

    @staticmethod
    def _make(rows: int) -> Iterator[bytes]:
        yield b"custom_id,prompt,team\n"
        for n in range(rows):
            yield b'r%d,"Summarise, please: line %d\nof a longer text",t%d\n' % (n, n, n % 7)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: object) -> int:
        view = memoryview(buffer)  # type: ignore[arg-type]
        while len(self._pending) < len(view):
            chunk = next(self._lines, b"")
            if not chunk:
                break
            self._pending += chunk
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def test_200000_rows_stream_through_in_bounded_memory() -> None:
    tracemalloc.start()
    try:
        stream = io.BufferedReader(_Generated(200_000))
        count = last = 0
        for outcome in read_csv(stream, "big.csv", STRICT):
            parsed(outcome)
            count += 1
            last = outcome.line_no
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 200_000
    assert last == 1 + 2 * 200_000 - 1  # two lines a row, the header on line 1
    assert peak < 8 * 1024 * 1024, peak  # a ~15 MB file; the rows are not kept
