"""The Anthropic-compatible Message Batches API (`/v1/messages/batches`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from api.batch_views import ANTHROPIC_BATCH_PREFIX, anthropic_batch, anthropic_list
from api.deps import (
    IdempotencyKey,
    Tenant,
    cache_of,
    limits_of,
    policy_of,
    sessions_of,
    settings_of,
)
from api.errors import error_responses
from api.intake_caps import caps_for
from api.json_body import JsonBodyRoute
from api.links import link, links, read_by_id
from compat.anthropic_output import results_jsonl
from intake.batches import batch_uuid, create_anthropic_batch
from intake.service import request_hash
from models.batches import (
    ANTHROPIC_KIND,
    cancel_batch,
    delete_batch,
    get_batch,
    line_records,
    list_batches,
    progress_of,
)
from models.status import SubmissionStatus
from models.tables import Submission
from models.tenants import TenantRef
from penny.errors import NotFound, StateConflict

PREFIX = "/v1/messages/batches"
router = APIRouter(prefix=PREFIX, route_class=JsonBodyRoute,
                   responses=error_responses(400, 401, 402, 404, 409, 413, 422, 429))


class CreateMessageBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Items are checked one by one in intake, so one bad item is named, not a 422 blob.
    requests: list[Any] = Field(min_length=1)


def _public_id(row: Submission) -> str:
    return f"{ANTHROPIC_BATCH_PREFIX}{row.id.hex}"


def _results_url(request: Request, row: Submission) -> str:
    return str(request.url_for("message_batch_results", message_batch_id=_public_id(row)))


def _view(request: Request, session: Session, row: Submission) -> dict[str, Any]:
    progress = progress_of(session, [row.id])[row.id]
    return anthropic_batch(row, progress, _results_url(request, row))


def _load(session: Session, tenant: TenantRef, message_batch_id: str) -> Submission:
    row = get_batch(session, tenant.id,
                    batch_uuid(message_batch_id, ANTHROPIC_BATCH_PREFIX), ANTHROPIC_KIND)
    if row is None:
        raise NotFound(f"no message batch with id {message_batch_id!r}",
                       param="message_batch_id")
    return row


@router.post("", responses=links(
    200, GetMessageBatch=read_by_id(f"{PREFIX}/{{message_batch_id}}", "message_batch_id"),
    GetResults=read_by_id(f"{PREFIX}/{{message_batch_id}}/results", "message_batch_id"),
    CancelMessageBatch=link(f"{PREFIX}/{{message_batch_id}}/cancel", "post",
                            message_batch_id="$response.body#/id")))
def create(
    body: CreateMessageBatch, request: Request, response: Response, tenant: Tenant,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    caps = caps_for(request, tenant.id)  # read before the session: one connection at a time
    with sessions_of(request)() as session:
        stored = create_anthropic_batch(
            session, limits_of(request), tenant=tenant, requests=body.requests,
            max_requests=settings_of(request).max_batch_requests,
            payload_hash=request_hash(body.model_dump(mode="json")),
            caps=caps,
            idempotency_key=idempotency_key, policy=policy_of(request), cache=cache_of(request),
        )
        if stored.replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return _view(request, session, stored.submission)


@router.get("")
def read_all(
    request: Request,
    tenant: Tenant,
    after_id: str | None = None,
    before_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> dict[str, Any]:
    after = batch_uuid(after_id, ANTHROPIC_BATCH_PREFIX) if after_id else None
    before = batch_uuid(before_id, ANTHROPIC_BATCH_PREFIX) if before_id else None
    with sessions_of(request)() as session:
        page = list_batches(session, tenant.id, ANTHROPIC_KIND,
                            limit=limit, after=after, before=before)
        progress = progress_of(session, [b.id for b in page.batches])
        session.commit()
    return anthropic_list([anthropic_batch(b, progress[b.id], _results_url(request, b))
                           for b in page.batches], page.has_more)


@router.get("/{message_batch_id}")
def read_one(message_batch_id: str, request: Request, tenant: Tenant) -> dict[str, Any]:
    with sessions_of(request)() as session:
        view = _view(request, session, _load(session, tenant, message_batch_id))
        session.commit()
    return view


@router.post("/{message_batch_id}/cancel")
def cancel(message_batch_id: str, request: Request, tenant: Tenant) -> dict[str, Any]:
    with sessions_of(request)() as session:
        row = _load(session, tenant, message_batch_id)
        if not cancel_batch(session, row.id):
            session.rollback()
            raise StateConflict(f"message batch {message_batch_id!r} has ended or is ending",
                                param="message_batch_id")
        session.commit()
        session.refresh(row)
        view = _view(request, session, row)
        session.commit()
    return view


@router.delete("/{message_batch_id}")
def delete(message_batch_id: str, request: Request, tenant: Tenant) -> dict[str, Any]:
    with sessions_of(request)() as session:
        row = _load(session, tenant, message_batch_id)
        if row.status != SubmissionStatus.COMPLETED:
            raise StateConflict("a message batch can be deleted once it has ended; cancel it "
                                "first", param="message_batch_id")
        delete_batch(session, row.id)
        session.commit()
    return {"id": message_batch_id, "type": "message_batch_deleted"}


@router.get("/{message_batch_id}/results", name="message_batch_results")
def results(message_batch_id: str, request: Request, tenant: Tenant) -> Response:
    with sessions_of(request)() as session:
        row = _load(session, tenant, message_batch_id)
        if row.status != SubmissionStatus.COMPLETED:
            raise StateConflict("results are available once the batch has ended",
                                param="message_batch_id")
        body = results_jsonl(line_records(session, row.id))
        session.commit()
    return Response(body, media_type="application/binary")
