"""Reads a CSV file as a stream of rows, each tagged with the line it starts on.

Memory stays bounded whatever the file's size: the file is read one physical line at a
time (a line longer than the reader's limit is refused, never read whole), and a cell is
never longer than the cell limit (a quoted cell spanning lines included).

The csv module is strict about quoting here: a quote that closes a cell and is followed by
anything but a delimiter or a line end, or a quoted cell the file ends inside, is a
structural error. Past one, where rows begin is a guess, so it ends the reading: it is
reported naming the line its row starts on, with every row error found before it.

UTF-8, with or without a byte-order mark, is the default. A file that looks like UTF-16
(a UTF-16 byte-order mark, or NUL bytes at its start) is refused unless its encoding is
declared: read as UTF-8 it would be one long row of garbage. A line that does not decode
is an error naming the line and column, not a byte offset.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from intake.text import escape_unstorable
from penny.errors import InputFileError

_UTF8_BOM = codecs.BOM_UTF8
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# A line break inside a decoded line that is not the line's own end: a lone CR (old Mac
# files) ends a row too. Split on it so the line count matches what an editor shows.
_LINE_PIECE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")
_SNIFF_BYTES = 4096
RAW_ECHO_CHARS = 200  # how much of a bad row its error echoes back


@dataclass(frozen=True)
class CsvRow:
    """One row of cells, padded to the header's width, and the line it starts on."""

    line_no: int
    cells: tuple[str, ...]


@dataclass(frozen=True)
class CsvRowError:
    """A row penny cannot use; `fatal` when the file cannot be read past it."""

    line_no: int
    message: str
    raw: str = ""
    fatal: bool = False


CsvItem = CsvRow | CsvRowError


def max_line_bytes(max_cell_chars: int) -> int:
    """The longest physical line read: room for a few cells at the limit, 4 bytes each."""
    return 8 * max_cell_chars + 65_536


def _is_ascii_compatible(encoding: str) -> bool:
    try:
        return "\r\n,\"".encode(encoding) == b'\r\n,"'
    except (LookupError, UnicodeError):
        return False


def check_encoding(encoding: str | None) -> str | None:
    """The declared encoding's canonical name; InputFileError when Python knows none."""
    if encoding is None:
        return None
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise InputFileError(f"unknown encoding {encoding!r}", param="encoding") from None
    try:
        # Python's bytes-to-bytes and str-to-str codecs (base64, zlib, rot13, ...) are
        # found by lookup, but a text stream refuses them.
        io.TextIOWrapper(io.BytesIO(), encoding=name)
    except LookupError:
        raise InputFileError(f"{encoding!r} is not a text encoding", param="encoding") from None
    return name


def _mostly_nul(head: bytes) -> bool:
    """UTF-16 text in the Latin range is every other byte NUL; a stray NUL in UTF-8 text
    is a bad cell, reported on its line, not a reason to refuse the file."""
    sample = head[:1024]
    return len(sample) >= 2 and sample.count(0) * 4 >= len(sample)


class _Lines:
    """The file's physical lines, decoded, counting them as it goes."""

    def __init__(self, stream: IO[bytes], name: str, encoding: str | None,
                 max_line: int) -> None:
        self.name, self.max_line = name, max_line
        self.count = 0  # lines handed to the csv reader so far
        head = stream.read(_SNIFF_BYTES)
        self.encoding = encoding or "utf-8"
        if encoding is None and (head.startswith(_UTF16_BOMS) or _mostly_nul(head)):
            raise InputFileError(
                f"{name} looks like UTF-16 text (a UTF-16 byte-order mark or NUL bytes); "
                "save it as UTF-8, or declare its encoding (for example utf-16)",
                param="encoding")
        if self.encoding == "utf-8" and head.startswith(_UTF8_BOM):
            head = head[len(_UTF8_BOM):]
        self._stream = io.BufferedReader(_Prefixed(head, stream), buffer_size=1 << 16)
        self._text: IO[str] | None = None
        if not _is_ascii_compatible(self.encoding):
            # UTF-16 and friends: a byte 0x0A is no line end there, so decode first.
            self._text = io.TextIOWrapper(self._stream, encoding=self.encoding, newline="")

    def _undecodable(self, error: UnicodeDecodeError, line: bytes) -> InputFileError:
        column = len(line[: error.start].decode(self.encoding, errors="replace")) + 1
        label = "UTF-8" if self.encoding == "utf-8" else self.encoding
        where = f"line {self.count + 1}, column {column}"
        return InputFileError(
            f"{self.name} is not {label} text ({where}: byte 0x{line[error.start]:02x}); "
            "declare the file's encoding (for example latin-1) or save it as UTF-8",
            param="encoding")

    def _too_long(self) -> InputFileError:
        line = self.count + 1
        message = (f"line {line} is longer than {self.max_line} bytes; the reader stops "
                   "there, as no cell may be that long")
        return InputFileError(f"{self.name} {message}")

    def _read_text_line(self) -> str:
        if self._text is not None:
            try:
                text = self._text.readline(self.max_line)
            except UnicodeError:  # some codecs (utf-16 without a BOM, punycode) raise the base
                raise InputFileError(
                    f"{self.name} is not {self.encoding} text (line {self.count + 1})",
                    param="encoding") from None
            if len(text) >= self.max_line and not text.endswith(("\n", "\r")):
                raise self._too_long()
            return text
        raw = self._stream.readline(self.max_line)
        if len(raw) >= self.max_line and not raw.endswith(b"\n"):
            raise self._too_long()
        try:
            return raw.decode(self.encoding)
        except UnicodeDecodeError as error:
            raise self._undecodable(error, raw) from None
        except UnicodeError:
            raise InputFileError(f"{self.name} is not {self.encoding} text (line "
                                 f"{self.count + 1})", param="encoding") from None

    def __iter__(self) -> Iterator[str]:
        while True:
            text = self._read_text_line()
            if not text:
                return
            if "\r" in text.rstrip("\r\n") or text.endswith("\r"):
                for piece in _LINE_PIECE.findall(text):
                    self.count += 1
                    yield piece
            else:
                self.count += 1
                yield text


class _Prefixed(io.RawIOBase):
    """`stream` with `head` (already read from it) put back in front."""

    def __init__(self, head: bytes, stream: IO[bytes]) -> None:
        self._head, self._stream = head, stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _raw(cells: list[str]) -> str:
    return escape_unstorable(",".join(cells)[:RAW_ECHO_CHARS])


class CsvReader:
    """`header` is read on construction (InputFileError when there is none); iterating
    yields every later row or row error, in file order, blank lines skipped."""

    def __init__(self, stream: IO[bytes], *, name: str, max_cell_chars: int,
                 encoding: str | None = None) -> None:
        self.name, self.max_cell_chars = name, max_cell_chars
        self._lines = _Lines(stream, name, check_encoding(encoding), max_line_bytes(max_cell_chars))
        # Process-wide, but every reader in a process uses the same limit; one above it
        # lets this reader name the cell itself rather than relay the csv module's message.
        csv.field_size_limit(max_cell_chars + 1)
        self._reader = csv.reader(iter(self._lines), strict=True)
        self._consumed = 0  # lines read up to the end of the previous row
        first = self._next()
        while isinstance(first, CsvRow) and not any(c.strip() for c in first.cells):
            first = self._next()  # blank lines before the header
        if first is None:
            raise InputFileError(f"{name} is empty: a CSV input needs a header row with a 'prompt' "
                                 "column (or the columns a template names)")
        if isinstance(first, CsvRowError):
            raise InputFileError(f"{name} header: {first.message}",
                                 details=[{"line": first.line_no, "code": "invalid_file",
                                           "message": first.message}])
        self.header_line = first.line_no
        self.header = tuple(cell.strip() for cell in first.cells)
        self._check_header()

    def _check_header(self) -> None:
        seen: set[str] = set()
        for index, column in enumerate(self.header, start=1):
            if not column:
                raise InputFileError(f"{self.name}: header column {index} has no name")
            if column in seen:
                raise InputFileError(f"{self.name}: header names column {column!r} twice")
            reason = escape_unstorable(column) != column
            if reason:
                raise InputFileError(f"{self.name}: header column {index} holds a NUL "
                                     "character or an unpaired surrogate")
            seen.add(column)

    def _next(self) -> CsvRow | CsvRowError | None:
        start = self._consumed + 1
        try:
            cells = next(self._reader)
        except StopIteration:
            return None
        except csv.Error as error:
            self._consumed = self._lines.count
            return self._structural(start, str(error))
        self._consumed = self._lines.count
        return CsvRow(start, tuple(cells))

    def _structural(self, start: int, reason: str) -> CsvRowError:
        here = self._lines.count
        where = f"line {start}" if here <= start else f"line {start} (read up to line {here})"
        if "field larger than field limit" in reason:
            message = (f"{where}: a cell is longer than {self.max_cell_chars} characters, "
                       "the longest prompt penny accepts")
        elif "unexpected end of data" in reason:
            message = (f"line {start}: a quoted cell opened in the row starting here is never "
                       "closed; the file ends inside it")
        elif "expected after" in reason:
            message = (f"{where}: a quoted cell opened in the row starting on line {start} "
                       f"is closed by a quote followed by another character on line {here}; "
                       'a quote inside a quoted cell is written twice ("")')
        else:
            message = f"{where}: {reason}"
        return CsvRowError(start, message, fatal=True)

    def __iter__(self) -> Iterator[CsvItem]:
        width, limit = len(self.header), self.max_cell_chars
        reader, lines = self._reader, self._lines
        while True:
            # _next inlined: this loop runs once per row of files of millions of rows.
            start = self._consumed + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                self._consumed = lines.count
                yield self._structural(start, str(error))
                return
            self._consumed = lines.count
            if not cells:
                continue  # a blank line
            if len(cells) > width:
                yield CsvRowError(start, "the row has "
                                  f"{len(cells)} fields, more fields than the header's {width} "
                                  "columns",
                                  _raw(cells))
                continue
            if max(map(len, cells)) > limit:
                long_cell = next(i for i, c in enumerate(cells) if len(c) > limit)
                yield CsvRowError(start, "column "
                                  f"{self.header[long_cell]!r} holds {len(cells[long_cell])} "
                                  f"characters; the limit is {limit}",
                                  _raw(cells))
                continue
            if len(cells) < width:
                cells.extend([""] * (width - len(cells)))
            yield CsvRow(start, tuple(cells))
