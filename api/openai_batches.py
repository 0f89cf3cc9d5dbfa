"""The OpenAI-compatible Batch API (`/v1/batches`), plus penny's `retry` extension."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, HttpUrl
from sqlalchemy.orm import Session

from api.batch_views import OPENAI_BATCH_PREFIX, openai_batch, openai_list
from api.deps import IdempotencyKey, Tenant, cache_of, policy_of, sessions_of
from api.errors import error_responses
from api.intake_caps import caps_for
from api.json_body import JsonBodyRoute
from api.links import link, links, read_by_id
from api.webhooks import checked_callback
from intake.batches import OpenAIBatchParams, batch_uuid, create_openai_batch, retry_batch
from intake.service import request_hash
from intake.text import StorableText
from models.batches import OPENAI_KIND, cancel_batch, get_batch, list_batches, progress_of
from models.tables import Submission
from models.tenants import TenantRef
from penny.errors import NotFound, StateConflict

router = APIRouter(prefix="/v1", route_class=JsonBodyRoute,
                   responses=error_responses(400, 401, 402, 404, 409, 413, 422, 429))

class OutputExpiresAfter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    anchor: Literal["created_at"]
    seconds: int = Field(ge=3600, le=30 * 24 * 3600)


class CreateBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: StorableText = Field(min_length=1, max_length=64)
    endpoint: StorableText
    completion_window: StorableText
    # Stored as given: keys and values must be text Postgres can hold.
    metadata: dict[StorableText, Annotated[StorableText, Field(max_length=512)]] | None = Field(
        default=None, max_length=16)
    output_expires_after: OutputExpiresAfter | None = None
    # penny's extension: where to announce the batch's end (also read from metadata).
    callback_url: HttpUrl | None = None


def _view(session: Session, row: Submission) -> dict[str, Any]:
    return openai_batch(row, progress_of(session, [row.id])[row.id])


def _load(session: Session, tenant: TenantRef, batch_id: str) -> Submission:
    row = get_batch(session, tenant.id,
                    batch_uuid(batch_id, OPENAI_BATCH_PREFIX), OPENAI_KIND)
    if row is None:
        raise NotFound(f"no batch with id {batch_id!r}", param="batch_id")
    return row


@router.post("/batches", responses=links(
    200, GetBatch=read_by_id("/v1/batches/{batch_id}", "batch_id"),
    CancelBatch=link("/v1/batches/{batch_id}/cancel", "post", batch_id="$response.body#/id")))
def create_batch(
    body: CreateBatch, request: Request, response: Response, tenant: Tenant,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    callback = (checked_callback(request, str(body.callback_url)) if body.callback_url else
                checked_callback(request, (body.metadata or {}).get("callback_url"),
                                 param="metadata.callback_url"))
    params = OpenAIBatchParams(
        input_file_id=body.input_file_id,
        endpoint=body.endpoint,
        completion_window=body.completion_window,
        metadata=body.metadata,
        output_expires_after_seconds=(body.output_expires_after.seconds
                                      if body.output_expires_after else None),
        callback_url=callback,
    )
    with sessions_of(request)() as session:
        stored = create_openai_batch(
            session, tenant=tenant, params=params,
            payload_hash=request_hash(body.model_dump(mode="json")),
            idempotency_key=idempotency_key, policy=policy_of(request),
        )
        if stored.replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return _view(session, stored.submission)


@router.get("/batches")
def read_batches(
    request: Request,
    tenant: Tenant,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    cursor = batch_uuid(after, OPENAI_BATCH_PREFIX) if after else None
    with sessions_of(request)() as session:
        page = list_batches(session, tenant.id, OPENAI_KIND, limit=limit,
                            after=cursor)
        progress = progress_of(session, [b.id for b in page.batches])
        session.commit()
    return openai_list([openai_batch(b, progress[b.id]) for b in page.batches], page.has_more)


@router.get("/batches/{batch_id}")
def read_batch(batch_id: str, request: Request, tenant: Tenant) -> dict[str, Any]:
    with sessions_of(request)() as session:
        view = _view(session, _load(session, tenant, batch_id))
        session.commit()
    return view


@router.post("/batches/{batch_id}/cancel")
def cancel(batch_id: str, request: Request, tenant: Tenant) -> dict[str, Any]:
    """Jobs not yet started are cancelled now; running ones finish and stay in the output
    (and the bill). The batch reads `cancelling` until its last running job is done."""
    with sessions_of(request)() as session:
        row = _load(session, tenant, batch_id)
        if not cancel_batch(session, row.id):
            session.rollback()
            raise StateConflict(f"batch {batch_id!r} cannot be cancelled: it is "
                                f"{_view(session, row)['status']}", param="batch_id")
        session.commit()
        session.refresh(row)
        view = _view(session, row)
        session.commit()
    return view


@router.post("/batches/{batch_id}/retry")
def retry(
    batch_id: str, request: Request, response: Response, tenant: Tenant,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """penny's extension: a new batch re-running this one's failed, expired and cancelled
    lines, with the same custom_ids."""
    caps = caps_for(request, tenant.id)  # read before the session: one connection at a time
    with sessions_of(request)() as session:
        original = _load(session, tenant, batch_id)
        stored = retry_batch(session, tenant=tenant, original=original,
                             payload_hash=request_hash(["retry", batch_id]),
                             caps=caps,
                             idempotency_key=idempotency_key, policy=policy_of(request),
                             cache=cache_of(request))
        if stored.replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return _view(session, stored.submission)
