"""Queues a native JSONL file (one job request per line, as `POST /v1/jobs` takes it) as
one submission, streaming it into job rows as `intake.csv_upload` does a CSV file.

The file is read one line at a time and a line longer than the limit is refused, never
read whole, so memory stays flat whatever the file's size. Every bad line is named by its
number; a file with bad lines is rejected whole unless the caller asks to skip them.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy.orm import Session

from cache.keys import CachePolicy
from intake.admission import IntakePolicy
from intake.csv_mapping import BAD_FILE
from intake.csv_upload import QueuedCsv, StreamedFile, content_digest, queue_streamed
from intake.fast_jobs import plain_job
from intake.limits import IntakeLimits
from intake.line_outcome import LineError, validated_line
from intake.max_tokens_caps import JobCaps
from intake.service import jobs_for_file, request_hash
from intake.text import escape_unstorable, load_json
from models.submissions import NewJob
from models.tenants import TenantRef
from penny.errors import InvalidJson

RAW_ECHO_CHARS = 200  # how much of a bad line its error echoes back


def max_line_bytes(max_prompt_chars: int) -> int:
    """The longest line read: a prompt at the limit, 4 bytes a character, escaped JSON
    (up to 6 bytes a character) and room for the other fields."""
    return 6 * max_prompt_chars + 65_536


@dataclass(frozen=True)
class JsonlSource:
    """A JSONL file to queue: its bytes (seekable unless fingerprinted) and how to read it."""

    stream: IO[bytes]
    name: str
    skip_bad_rows: bool
    max_line_bytes: int
    max_json_depth: int
    # What identifies the bytes without reading them (an S3 object's URL and ETag); None:
    # the stream is seekable and its bytes are hashed.
    fingerprint: str | None = None

    def digest(self, extra: Any = None) -> str:
        """What the Idempotency-Key is checked against: the bytes and the options."""
        return request_hash([self.name, content_digest(self.stream, self.fingerprint),
                             "jsonl", self.skip_bad_rows, extra])


def _raw(line: bytes) -> str:
    return escape_unstorable(line[:RAW_ECHO_CHARS].decode("utf-8", errors="replace"))


def _failed(line_no: int, code: str, message: str, raw: str, limits: IntakeLimits) -> NewJob:
    (job,) = jobs_for_file([LineError(line_no, code, message, raw)], limits)
    return job


def line_job(line_no: int, line: bytes, limits: IntakeLimits, max_depth: int,
             caps: JobCaps) -> NewJob:
    """The job one line makes, the tenant's caps applied, or a failed job naming the line
    and what is wrong with it."""
    try:
        payload = load_json(line, max_depth, what="the line")
    except InvalidJson as error:
        return _failed(line_no, "invalid_json", error.message, _raw(line), limits)
    job = plain_job(payload, line_no, limits, caps=caps)
    if job is not None:
        return job
    (job,) = jobs_for_file([validated_line(line_no, _raw(line), payload)], limits)
    return caps.job(job)


def jsonl_jobs(stream: IO[bytes], name: str, limits: IntakeLimits, max_line: int,
               max_depth: int, caps: JobCaps) -> Iterator[NewJob]:
    """One job per non-blank line, in order. Lines end at "\\n" only (JSON allows U+2028
    and friends raw inside strings); a UTF-8 byte-order mark before the first is skipped.
    A line over `max_line` bytes ends the reading with a failed job naming it."""
    line_no = 0
    while line := stream.readline(max_line + 1):
        line_no += 1
        if len(line) > max_line:
            yield _failed(line_no, BAD_FILE,
                          f"{name} line {line_no} is longer than {max_line} bytes; the "
                          "reader stops there", _raw(line), limits)
            return
        if line_no == 1 and line.startswith(codecs.BOM_UTF8):
            line = line[len(codecs.BOM_UTF8):]
        if line.strip():
            yield line_job(line_no, line.rstrip(b"\r\n"), limits, max_depth, caps)


def queue_jsonl(
    session: Session,
    source: JsonlSource,
    *,
    tenant: TenantRef,
    limits: IntakeLimits,
    policy: IntakePolicy,
    cache: CachePolicy | None,
    caps: JobCaps,
    idempotency_key: str | None = None,
    columns: dict[str, Any] | None = None,
) -> QueuedCsv:
    """Queue every line of `source` as one submission and commit (see
    `intake.csv_upload.queue_streamed`), the tenant's max_tokens `caps` applied to each."""

    def open_jsonl() -> StreamedFile:
        if source.fingerprint is None:
            source.stream.seek(0)
        return StreamedFile(source.name, jsonl_jobs(source.stream, source.name, limits,
                                                    source.max_line_bytes,
                                                    source.max_json_depth, caps),
                            source.skip_bad_rows)

    return queue_streamed(session, source.digest(columns), open_jsonl, tenant=tenant,
                          policy=policy, cache=cache, idempotency_key=idempotency_key,
                          columns=columns, kind="jsonl")
