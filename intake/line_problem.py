"""The one way a batch line is wrong: a code, a message and the param it names."""

from __future__ import annotations


class LineProblem(Exception):
    """Raised while reading one line of a batch input file; the parser turns it into that
    line's error record (it never escapes the parser)."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param
