"""The OpenAI-compatible Files API (`/v1/files`) and model list (`/v1/models`)."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile

from api.batch_views import file_object, openai_list, unix
from api.deps import (
    IdempotencyKey,
    Tenant,
    policy_of,
    s3_reader_of,
    s3_sources_of,
    sessions_of,
    settings_of,
    single_form_fields,
    store_of,
)
from api.errors import error_responses
from api.json_body import JsonBodyRoute
from api.links import link, links, read_by_id
from intake.service import request_hash
from intake.text import unstorable_reason
from models.files import (
    delete_file,
    find_upload,
    forget_upload_key,
    get_file,
    insert_upload,
    list_files,
    new_file_id,
)
from models.files import object_key_for as file_key
from models.tables import StoredFile
from models.tenants import TenantRef
from penny.errors import IdempotencyConflict, InvalidRequest, NotFound, TooLarge
from routing.catalog import build_catalog

router = APIRouter(prefix="/v1", route_class=JsonBodyRoute,
                   responses=error_responses(400, 401, 403, 404, 409, 413, 422))

# Uploads penny accepts: batch inputs. (Outputs are `batch_output`, written by penny.)
UPLOAD_PURPOSES = frozenset({"batch"})
MIN_EXPIRY_SECONDS, MAX_EXPIRY_SECONDS = 3600, 30 * 24 * 3600
# The multipart envelope around the file: boundaries, headers, the purpose field.
MULTIPART_SLACK_BYTES = 64 * 1024


def _expiry_seconds(anchor: str | None, seconds: int | None) -> int | None:
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise InvalidRequest("expires_after[anchor] must be 'created_at'",
                             param="expires_after.anchor")
    if seconds is None or not MIN_EXPIRY_SECONDS <= seconds <= MAX_EXPIRY_SECONDS:
        raise InvalidRequest(
            f"expires_after[seconds] must be between {MIN_EXPIRY_SECONDS} and "
            f"{MAX_EXPIRY_SECONDS}", param="expires_after.seconds")
    return seconds


def _storable(value: str, param: str) -> str:
    reason = unstorable_reason(value)
    if reason is not None:
        raise InvalidRequest(f"{param} {reason}", param=param)
    return value


@router.post("/files", dependencies=[Depends(single_form_fields)],
             responses={**error_responses(503), **links(
    200, GetFile=read_by_id("/v1/files/{file_id}", "file_id"),
    GetFileContent=read_by_id("/v1/files/{file_id}/content", "file_id"),
    DeleteFile=link("/v1/files/{file_id}", "delete", file_id="$response.body#/id"))})
def upload_file(
    request: Request,
    response: Response,
    tenant: Tenant,
    purpose: Annotated[str, Form()],
    file: Annotated[UploadFile | None, File()] = None,
    source: Annotated[str | None, Form(
        description="Instead of `file`: an s3://bucket/key object this tenant may have "
                    "penny read; it is copied in as the file")] = None,
    expires_anchor: Annotated[str | None, Form(alias="expires_after[anchor]")] = None,
    expires_seconds: Annotated[int | None, Form(alias="expires_after[seconds]")] = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    if purpose not in UPLOAD_PURPOSES:
        raise InvalidRequest(f"purpose {purpose!r} is not served here; upload batch inputs "
                             "with purpose 'batch'", param="purpose")
    expiry = _expiry_seconds(expires_anchor, expires_seconds)
    limit = settings_of(request).max_file_bytes
    if (file is None) == (source is None):
        raise InvalidRequest("send the file as `file`, or name an s3:// object as `source`; "
                             "exactly one of the two", param="file")
    if file is not None:
        filename = _storable(file.filename or "upload.jsonl", "file.filename")
        data = file.file.read(limit + 1)
        if len(data) > limit:
            raise TooLarge(f"the file is larger than {limit} bytes", param="file")
    else:
        assert source is not None
        # Allowed or not is decided before anything is read.
        location = s3_sources_of(request).check(tenant.name, source, param="source")
        filename = location.name
        data = s3_reader_of(request).read(location, limit)
    digest = request_hash([purpose, filename, expiry, hashlib.sha256(data).hexdigest()])
    cutoff = policy_of(request).idempotency_cutoff()
    with sessions_of(request)() as session:
        for _ in range(2):  # a second pass only after forgetting an expired key
            file_id = new_file_id()
            row = insert_upload(session, file_id=file_id, tenant_id=tenant.id,
                                purpose=purpose, filename=filename, size=len(data),
                                expires_after_seconds=expiry,
                                idempotency_key=idempotency_key, request_hash=digest)
            if row is not None:
                # The row is written but not committed while the bytes go to the store: a
                # concurrent duplicate waits on the key, and a failed put leaves no row.
                store_of(request).put(file_key(file_id), data, "application/jsonl")
                session.commit()
                return file_object(row)
            session.rollback()
            assert idempotency_key is not None, "only a taken key makes the insert a no-op"
            existing = find_upload(session, tenant.id, idempotency_key)
            if existing is None:  # deleted meanwhile: its key went with it
                continue
            if existing.created_at < cutoff:
                forget_upload_key(session, existing.id)
                session.commit()
                continue
            if existing.request_hash != digest:
                raise IdempotencyConflict(
                    "this Idempotency-Key was already used with a different upload",
                    param="Idempotency-Key")
            response.headers["Idempotent-Replayed"] = "true"
            return file_object(existing)
    raise IdempotencyConflict("this Idempotency-Key is in use; retry",  # pragma: no cover
                              param="Idempotency-Key")


@router.get("/files")
def read_files(
    request: Request,
    tenant: Tenant,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
    purpose: str | None = None,
) -> dict[str, Any]:
    if purpose is not None:
        _storable(purpose, "purpose")
    with sessions_of(request)() as session:
        page = list_files(session, tenant.id, limit=limit, after=after,
                          newest_first=order == "desc", purpose=purpose)
        session.commit()
        return openai_list([file_object(f) for f in page.files], page.has_more)


def _existing_file(request: Request, tenant: TenantRef, file_id: str) -> StoredFile:
    with sessions_of(request)() as session:
        row = get_file(session, tenant.id, file_id)
        session.commit()
    if row is None:
        raise NotFound(f"no file with id {file_id!r}", param="file_id")
    return row


@router.get("/files/{file_id}")
def read_file(file_id: str, request: Request, tenant: Tenant) -> dict[str, Any]:
    return file_object(_existing_file(request, tenant, file_id))


@router.get("/files/{file_id}/content")
def read_file_content(file_id: str, request: Request, tenant: Tenant) -> Response:
    row = _existing_file(request, tenant, file_id)
    return Response(store_of(request).get(row.object_key),
                    media_type="application/octet-stream")


@router.delete("/files/{file_id}")
def remove_file(file_id: str, request: Request, tenant: Tenant) -> dict[str, Any]:
    with sessions_of(request)() as session:
        row = delete_file(session, tenant.id, file_id)
        session.commit()
    if row is None:
        raise NotFound(f"no file with id {file_id!r}", param="file_id")
    store_of(request).delete(row.object_key)
    return {"id": file_id, "object": "file", "deleted": True}


@router.get("/models")
def read_models(request: Request, tenant: Tenant) -> dict[str, Any]:
    """The served models (chat and embedding), in the OpenAI list shape, and with tiers
    the two routed names `auto` and `cascade`; `penny_*` fields say each one's tier, label
    and declared engine options. `created` is when this server started: penny knows no
    better date for a model it loads from a directory."""
    started = unix(request.app.state.started_at)
    settings = settings_of(request)
    catalog = build_catalog(
        list(settings.models), list(settings.embedding_models), settings.tiers,
        settings.labelled_models,
        {name: engine.declared() for name, engine in settings.model_engines.items()})
    return {"object": "list", "data": [
        {"id": entry.id, "object": "model", "created": started, "owned_by": "penny",
         **entry.penny_fields()}
        for entry in catalog
    ]}
