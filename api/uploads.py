"""File uploads over HTTP: `POST /v1/uploads/csv` queues a CSV file, and
`POST /v1/uploads/jsonl` a native JSONL file (one `POST /v1/jobs` body per line), as one
submission each; either is sent, or named as an s3:// object the tenant may have read."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import IO, Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile
from pydantic import BaseModel

from api.deps import (
    IdempotencyKey,
    Tenant,
    cache_of,
    limits_of,
    policy_of,
    replayed_response,
    s3_reader_of,
    s3_sources_of,
    sessions_of,
    settings_of,
    single_form_fields,
)
from api.errors import error_responses
from api.intake_caps import caps_for
from api.json_body import JsonBodyRoute
from api.links import links, read_by_id
from api.webhooks import checked_callback
from intake.csv_mapping import CsvOptions
from intake.csv_upload import CsvSource, QueuedCsv, queue_csv
from intake.jsonl_upload import JsonlSource, max_line_bytes, queue_jsonl
from intake.text import unstorable_reason
from models.tenants import TenantRef
from penny.errors import InvalidRequest, TooLarge
from penny.settings import Settings

router = APIRouter(prefix="/v1", route_class=JsonBodyRoute,
                   responses=error_responses(400, 401, 402, 403, 404, 409, 413, 422, 429,
                                             503))

# The multipart envelope around the file: boundaries, headers, the form fields.
MULTIPART_SLACK_BYTES = 64 * 1024


class CsvAccepted(BaseModel):
    submission_id: str
    status: str
    rows: int
    bad_rows: int  # stored as failed jobs naming their line (on_bad_rows=skip)
    from_cache: int
    warnings: list[dict[str, object]] = []


def _text_field(value: str | None, param: str) -> str | None:
    if value is None:
        return None
    reason = unstorable_reason(value)
    if reason is not None:
        raise InvalidRequest(f"{param} {reason}", param=param)
    return value


@router.post("/uploads/csv", status_code=202,
             dependencies=[Depends(single_form_fields)], responses={
    **replayed_response(CsvAccepted), **links(
        202, GetSubmission=read_by_id("/v1/submissions/{submission_id}", "submission_id",
                                      "$response.body#/submission_id"))})
def upload_csv(
    request: Request,
    response: Response,
    tenant: Tenant,
    file: Annotated[UploadFile | None, File(
        description="The CSV file, UTF-8 unless `encoding` says otherwise")] = None,
    source: Annotated[str | None, Form(
        description="Instead of `file`: an s3://bucket/key object this tenant may have "
                    "penny read")] = None,
    template: Annotated[str | None, Form(
        description="Build each prompt from columns: 'Summarise: {body}'")] = None,
    id_column: Annotated[str | None, Form(
        description="The column holding each row's custom_id (default custom_id)")] = None,
    encoding: Annotated[str | None, Form(description="The file's encoding, when not UTF-8"
                                         )] = None,
    on_bad_rows: Annotated[Literal["reject", "skip"], Form(
        description="reject: a file with bad rows queues nothing (422 naming each); "
                    "skip: the good rows run, each bad one is a failed job")] = "reject",
    callback_url: Annotated[str | None, Form()] = None,
    idempotency_key: IdempotencyKey = None,
) -> CsvAccepted:
    """Queue every row of a CSV file as one job of a new submission. The rows come back
    as CSV (the input columns, then output, status and cost) at
    `GET /v1/submissions/{id}/results_csv`, and as JSONL at `.../results`."""
    settings = settings_of(request)
    options = CsvOptions(template=_text_field(template, "template"),
                         id_column=_text_field(id_column, "id_column"),
                         encoding=_text_field(encoding, "encoding"),
                         skip_bad_rows=on_bad_rows == "skip")
    callback = checked_callback(request, callback_url)
    if (file is None) == (source is None):
        raise InvalidRequest("send the CSV as `file`, or name an s3:// object as `source`; "
                             "exactly one of the two", param="file")
    with ExitStack() as stack:
        if file is not None:
            csv_source = _uploaded(file, options, settings)
        else:
            assert source is not None
            csv_source = _from_s3(request, tenant, source, options, settings)
            stack.callback(csv_source.stream.close)
        return _queue(request, response, tenant, csv_source, idempotency_key, callback)


def _uploaded(file: UploadFile, options: CsvOptions, settings: Settings) -> CsvSource:
    stream, name = _checked_upload(file, settings, default_name="upload.csv")
    return CsvSource(stream, name, options, settings.max_prompt_chars)


def _checked_upload(file: UploadFile, settings: Settings,
                    default_name: str) -> tuple[IO[bytes], str]:
    """An uploaded file's stream and name, once its declared size is within the limit."""
    limit = settings.max_csv_upload_bytes
    if file.size is not None and file.size > limit:
        raise TooLarge(f"the file is larger than {limit} bytes", param="file")
    return file.file, _text_field(file.filename, "file.filename") or default_name


@dataclass(frozen=True)
class _S3Object:
    stream: IO[bytes]
    name: str
    fingerprint: str  # what identifies its bytes without reading them


def _open_s3(request: Request, tenant: TenantRef, url: str, settings: Settings) -> _S3Object:
    """The tenant's s3:// object as a stream: allowed or not is decided before any read."""
    location = s3_sources_of(request).check(tenant.name, url, param="source")
    reader = s3_reader_of(request)
    info = reader.info(location)
    limit = settings.max_csv_upload_bytes
    if info.size > limit:
        raise TooLarge(f"{location.url[:300]!r} is {info.size} bytes; the limit is {limit}",
                       param="source")
    return _S3Object(reader.open(location, info), location.name,
                     f"{location.url} {info.etag} {info.size}")


def _from_s3(request: Request, tenant: TenantRef, url: str, options: CsvOptions,
             settings: Settings) -> CsvSource:
    found = _open_s3(request, tenant, url, settings)
    return CsvSource(found.stream, found.name, options, settings.max_prompt_chars,
                     fingerprint=found.fingerprint)


def _queue(request: Request, response: Response, tenant: TenantRef, source: CsvSource,
           idempotency_key: str | None, callback: str | None) -> CsvAccepted:
    caps = caps_for(request, tenant.id)  # read before the session: one connection at a time
    with sessions_of(request)() as session:
        queued = queue_csv(session, source, tenant=tenant, limits=limits_of(request),
                           policy=policy_of(request), cache=cache_of(request),
                           caps=caps,
                           idempotency_key=idempotency_key,
                           columns={"callback_url": callback} if callback else None)
        return _accepted(response, queued)


def _accepted(response: Response, queued: QueuedCsv) -> CsvAccepted:
    submission = queued.submission
    accepted = CsvAccepted(submission_id=str(submission.id), status=submission.status,
                           rows=queued.rows, bad_rows=queued.bad_rows,
                           from_cache=queued.from_cache, warnings=submission.warnings or [])
    if queued.replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return accepted


@router.post("/uploads/jsonl", status_code=202,
             dependencies=[Depends(single_form_fields)], responses={
    **replayed_response(CsvAccepted), **links(
        202, GetSubmission=read_by_id("/v1/submissions/{submission_id}", "submission_id",
                                      "$response.body#/submission_id"))})
def upload_jsonl(
    request: Request,
    response: Response,
    tenant: Tenant,
    file: Annotated[UploadFile | None, File(
        description="The JSONL file, UTF-8: one job request (a POST /v1/jobs body) a "
                    "line")] = None,
    source: Annotated[str | None, Form(
        description="Instead of `file`: an s3://bucket/key object this tenant may have "
                    "penny read")] = None,
    on_bad_rows: Annotated[Literal["reject", "skip"], Form(
        description="reject: a file with bad lines queues nothing (422 naming each); "
                    "skip: the good lines run, each bad one is a failed job")] = "reject",
    callback_url: Annotated[str | None, Form()] = None,
    idempotency_key: IdempotencyKey = None,
) -> CsvAccepted:
    """Queue every line of a JSONL file as one job of a new submission, streamed (the
    file is never held whole). Results come back as JSONL at
    `GET /v1/submissions/{id}/results`."""
    settings = settings_of(request)
    callback = checked_callback(request, callback_url)
    if (file is None) == (source is None):
        raise InvalidRequest("send the JSONL as `file`, or name an s3:// object as "
                             "`source`; exactly one of the two", param="file")
    with ExitStack() as stack:
        if file is not None:
            stream, name = _checked_upload(file, settings, default_name="upload.jsonl")
            fingerprint: str | None = None
        else:
            assert source is not None
            found = _open_s3(request, tenant, source, settings)
            stack.callback(found.stream.close)
            stream, name, fingerprint = found.stream, found.name, found.fingerprint
        jsonl = JsonlSource(stream, name, skip_bad_rows=on_bad_rows == "skip",
                            max_line_bytes=max_line_bytes(settings.max_prompt_chars),
                            max_json_depth=settings.max_json_depth, fingerprint=fingerprint)
        caps = caps_for(request, tenant.id)  # before the session: one connection at a time
        with sessions_of(request)() as session:
            queued = queue_jsonl(session, jsonl, tenant=tenant, limits=limits_of(request),
                                 policy=policy_of(request), cache=cache_of(request),
                                 caps=caps,
                                 idempotency_key=idempotency_key,
                                 columns={"callback_url": callback} if callback else None)
            return _accepted(response, queued)
