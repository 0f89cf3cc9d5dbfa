"""Webhooks: the delivery log (read, retry) and a tenant's default endpoint. Also the
registration-time SSRF check every route that takes a callback URL goes through."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from api.batch_views import ANTHROPIC_BATCH_PREFIX, OPENAI_BATCH_PREFIX, openai_list, unix
from api.deps import Tenant, sessions_of, settings_of
from api.errors import error_responses
from api.json_body import JsonBodyRoute
from delivery.guard import checked_callback_url
from delivery.schedule import DeliveryStatus
from models.tables import WebhookAttempt, WebhookDelivery
from models.tenants import TenantRef
from models.webhooks import (
    attempts_of,
    default_url,
    endpoint_disabled_at,
    get_delivery,
    list_deliveries,
    retry_delivery,
    set_default_url,
)
from penny.errors import InvalidRequest, NotFound

router = APIRouter(prefix="/v1/webhooks", route_class=JsonBodyRoute,
                   responses=error_responses(400, 401, 404, 413, 422))
DELIVERY_PREFIX = "whd_"


def checked_callback(request: Request, url: str | None, param: str = "callback_url"
                     ) -> str | None:
    """`url` if penny may call it back (None passes through); else a 422 naming `param`."""
    if url is None:
        return None
    return checked_callback_url(url, param=param,
                                allow_loopback=settings_of(request).webhook_allow_loopback)


def _delivery_uuid(public_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(hex=public_id.removeprefix(DELIVERY_PREFIX))
    except ValueError:
        raise NotFound(f"no webhook delivery with id {public_id!r}",
                       param="delivery_id") from None


def _submission_uuid(value: str) -> uuid.UUID:
    """A submission id as any API shows it: a batch id or penny's own."""
    raw = value.removeprefix(OPENAI_BATCH_PREFIX).removeprefix(ANTHROPIC_BATCH_PREFIX)
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise InvalidRequest(f"submission_id {value!r} is not a batch or submission id",
                             param="submission_id") from None


def delivery_view(row: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": f"{DELIVERY_PREFIX}{row.id.hex}",
        "object": "webhook.delivery",
        "event_id": row.event_id,
        "event_type": row.event_type,
        "submission_id": str(row.submission_id),
        "url": row.url,
        "status": row.status,
        "attempt_count": row.attempts,
        "next_attempt_at": unix(row.next_attempt_at) if row.status == "pending" else None,
        "last_attempt_at": unix(row.last_attempt_at),
        "delivered_at": unix(row.delivered_at),
        "last_status_code": row.last_status_code,
        "last_error": row.last_error,
        "created_at": unix(row.created_at),
    }


def _attempt_view(row: WebhookAttempt) -> dict[str, Any]:
    return {
        "attempt": row.attempt,
        "started_at": unix(row.started_at),
        "duration_ms": round(row.duration_ms, 1),
        "webhook_timestamp": row.webhook_timestamp,
        "address": row.address,
        "status_code": row.status_code,
        "outcome": row.outcome,
        "error": row.error,
        "retry_after_seconds": row.retry_after_seconds,
        "next_attempt_at": unix(row.next_attempt_at),
        "response_excerpt": row.response_excerpt,
    }


@router.get("/deliveries")
def read_deliveries(
    request: Request,
    tenant: Tenant,
    submission_id: str | None = None,
    status: DeliveryStatus | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    """Newest first; `submission_id` takes a batch id (`batch_...`, `msgbatch_...`) or a
    submission id."""
    submission = _submission_uuid(submission_id) if submission_id else None
    cursor = _delivery_uuid(after) if after else None
    with sessions_of(request)() as session:
        page = list_deliveries(session, tenant.id, limit=limit,
                               submission_id=submission, status=status, after=cursor)
        return openai_list([delivery_view(d) for d in page.deliveries], page.has_more)


def _load(request: Request, tenant: TenantRef, delivery_id: str) -> dict[str, Any]:
    with sessions_of(request)() as session:
        row = get_delivery(session, tenant.id, _delivery_uuid(delivery_id))
        if row is None:
            raise NotFound(f"no webhook delivery with id {delivery_id!r}",
                           param="delivery_id")
        return {**delivery_view(row), "event": json.loads(row.payload),
                "attempts": [_attempt_view(a) for a in attempts_of(session, row.id)]}


@router.get("/deliveries/{delivery_id}")
def read_delivery(delivery_id: str, request: Request, tenant: Tenant) -> dict[str, Any]:
    """The delivery with its event (the exact body sent) and every attempt."""
    return _load(request, tenant, delivery_id)


@router.post("/deliveries/{delivery_id}/retry")
def retry(delivery_id: str, request: Request, tenant: Tenant) -> dict[str, Any]:
    """Send it again now, as a new round of attempts with the same `webhook-id`. This also
    turns its endpoint back on if a 410 Gone had disabled it."""
    with sessions_of(request)() as session:
        row = get_delivery(session, tenant.id, _delivery_uuid(delivery_id))
        if row is None:
            raise NotFound(f"no webhook delivery with id {delivery_id!r}",
                           param="delivery_id")
        retry_delivery(session, row)
        session.commit()
    return _load(request, tenant, delivery_id)


class EndpointBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000)


def _endpoint_view(request: Request, tenant: TenantRef) -> dict[str, Any]:
    with sessions_of(request)() as session:
        url = default_url(session, tenant.id)
        disabled = endpoint_disabled_at(session, tenant.id, url) if url else None
    return {"object": "webhook.endpoint", "url": url, "disabled_at": unix(disabled)}


@router.get("/endpoint")
def read_endpoint(request: Request, tenant: Tenant) -> dict[str, Any]:
    """The tenant's default callback URL: where a submission without a callback_url of
    its own announces its end."""
    return _endpoint_view(request, tenant)


@router.put("/endpoint")
def write_endpoint(body: EndpointBody, request: Request, tenant: Tenant) -> dict[str, Any]:
    url = checked_callback(request, body.url, param="url")
    with sessions_of(request)() as session:
        set_default_url(session, tenant.id, url)
        session.commit()
    return _endpoint_view(request, tenant)


@router.delete("/endpoint")
def delete_endpoint(request: Request, tenant: Tenant) -> dict[str, Any]:
    with sessions_of(request)() as session:
        set_default_url(session, tenant.id, None)
        session.commit()
    return _endpoint_view(request, tenant)
