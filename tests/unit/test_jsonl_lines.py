"""intake.jsonl_upload.jsonl_jobs: a native JSONL file read line by line into jobs."""

from __future__ import annotations

import io

from intake.jsonl_upload import jsonl_jobs
from intake.limits import IntakeLimits
from intake.max_tokens_caps import NO_CAPS

LIMITS = IntakeLimits(models=frozenset({"tiny"}), default_model="tiny",
                      max_output_tokens=1000, max_prompt_chars=50)


def jobs(data: bytes, max_line: int = 1000) -> list[tuple[int, str | None, object]]:
    return [(j.line_no, (j.error or {}).get("code"), j.request.get("prompt"))
            for j in jsonl_jobs(io.BytesIO(data), "in.jsonl", LIMITS, max_line, 8, NO_CAPS)]


def test_lines_are_numbered_as_an_editor_shows_them() -> None:
    data = (b'\xef\xbb\xbf{"prompt": "a"}\r\n\n   \n{"prompt": "b\xe2\x80\xa8c"}\n'
            b'{"prompt": "d"}')  # a BOM, CRLF, blank lines, U+2028 in a string, no last \n
    assert jobs(data) == [(1, None, "a"), (4, None, "b\u2028c"), (5, None, "d")]


def test_each_bad_line_is_a_failed_job_naming_it() -> None:
    data = b'{"prompt": "a"}\n{bad\n\xff\n{"prompt": "a", "max_tokens": 5000}\n[]\n'
    found = list(jsonl_jobs(io.BytesIO(data), "in.jsonl", LIMITS, 1000, 8, NO_CAPS))
    assert [(j.line_no, (j.error or {}).get("code")) for j in found] == [
        (1, None), (2, "invalid_json"), (3, "invalid_json"), (4, "invalid_request"),
        (5, "invalid_line")]
    assert all(j.error["line"] == j.line_no for j in found[1:])  # type: ignore[index]
    assert "byte 0xff" in found[2].error["message"]  # type: ignore[index]


def test_a_line_over_the_limit_ends_the_reading() -> None:
    data = b'{"prompt": "a"}\n{"prompt": "' + b"x" * 60 + b'"}\n{"prompt": "c"}\n'
    assert jobs(data, max_line=40) == [(1, None, "a"), (2, "invalid_file", None)]
