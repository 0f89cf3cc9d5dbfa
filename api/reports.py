"""Reports on the ledger (`/v1/reports/...`): cost, the naive counterfactual and savings by
tenant, model, feature or day; the top cost drivers; two windows compared; the max_tokens
audit and retry storms; and the per-feature max_tokens caps (`/v1/max-tokens-caps`).

A tenant's key sees its own tenant only (naming another tenant is a 404, as if it did not
exist); an admin key (PENNY_ADMIN_API_KEYS) sees every tenant, or one with `tenant=`.
Windows are whole UTC days: `start` included, `end` excluded (default: the 30 days up to
and including today).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.auth import presented_key, tenant_for_request
from api.deps import sessions_of, settings_of
from api.errors import error_responses
from api.intake_caps import CapsCache
from api.json_body import JsonBodyRoute
from intake.text import StorableText
from ledger.cost_report import GROUPINGS
from ledger.max_tokens_audit import DEFAULT_MARGIN, AuditLine
from models.max_tokens_caps import CapInfo, delete_cap, list_caps, set_cap
from models.report_views import (
    Window,
    compare_report,
    cost_report,
    drivers_report,
    max_tokens_audit,
    retry_storms,
)
from models.tenants import TenantRef, find_tenant
from penny.errors import InvalidRequest, NotFound
from tenancy.keys import AdminKeys

router = APIRouter(route_class=JsonBodyRoute,
                   responses=error_responses(400, 401, 404, 413, 422))

MAX_WINDOW_DAYS = 400
DEFAULT_WINDOW_DAYS = 30
TenantName = Annotated[StorableText | None, Query(min_length=1, max_length=200)]
_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_day(value: object) -> object:
    """A day is written YYYY-MM-DD; pydantic alone would also read `0.0` as a Unix time."""
    if isinstance(value, str) and not _ISO_DAY.fullmatch(value):
        raise ValueError("a day is written YYYY-MM-DD")
    return value


IsoDay = Annotated[date, BeforeValidator(_iso_day)]
Day = Annotated[IsoDay | None, Query()]
Feature = Annotated[StorableText, Field(min_length=1, max_length=200)]


@dataclass(frozen=True)
class Scope:
    """Whose ledger a report reads: one tenant's, or (admin, no `tenant=`) everyone's."""

    tenant_id: uuid.UUID | None
    tenant: str | None
    admin: bool


async def report_scope(request: Request, tenant: TenantName = None) -> Scope:
    admin_keys: AdminKeys = request.app.state.admin_keys
    key = presented_key(request)
    if admin_keys and key and admin_keys.matches(key):
        if tenant is None:
            return Scope(None, None, admin=True)
        found = await run_in_threadpool(_find_tenant, request, tenant)
        if found is None:
            raise NotFound(f"no tenant named {tenant!r}", param="tenant")
        return Scope(found.id, found.name, admin=True)
    caller = await tenant_for_request(request)
    if tenant is not None and tenant != caller.name:
        raise NotFound(f"no tenant named {tenant!r}", param="tenant")
    return Scope(caller.id, caller.name, admin=False)


def _find_tenant(request: Request, name: str) -> TenantRef | None:
    with sessions_of(request)() as session:
        return find_tenant(session, name)


ReportScope = Annotated[Scope, Depends(report_scope)]


def window(start: date | None, end: date | None, param: str = "start") -> tuple[date, date]:
    end = end or datetime.now(UTC).date() + timedelta(days=1)
    if start is None:
        if end - date.min < timedelta(days=DEFAULT_WINDOW_DAYS):
            raise InvalidRequest("the window's end is too early to count days back from",
                                 param="end")
        start = end - timedelta(days=DEFAULT_WINDOW_DAYS)
    if start >= end:
        raise InvalidRequest(f"{param} must be before the window's end", param=param)
    if (end - start).days > MAX_WINDOW_DAYS:
        raise InvalidRequest(f"a window spans at most {MAX_WINDOW_DAYS} days", param=param)
    return start, end


def _scope_dict(scope: Scope, span: Window) -> dict[str, Any]:
    return {"tenant": scope.tenant, "start": span.start.isoformat(),
            "end": span.end.isoformat()}


def _window(start: date | None, end: date | None, param: str = "start") -> Window:
    first, last = window(start, end, param)
    return Window(first, last)


@router.get("/v1/reports/costs")
def costs(
    request: Request, scope: ReportScope,
    group_by: Annotated[str, Query(pattern="^(tenant|model|feature|day)$")] = "feature",
    start: Day = None, end: Day = None,
) -> dict[str, Any]:
    """Cost, naive counterfactual and savings by mechanism per group, with totals that are
    the exact sums of the groups. A feature of "" is the jobs without the feature tag."""
    span = _window(start, end)
    tag = settings_of(request).report_feature_tag
    with sessions_of(request)() as session:
        totals, lines = cost_report(session, span, group_by, tenant_id=scope.tenant_id,
                                    feature_tag=tag)
    return {"object": "report.costs", "group_by": group_by, "groupings": list(GROUPINGS),
            **_scope_dict(scope, span), "feature_tag": tag, "totals": totals.as_dict(),
            "data": [line.as_dict(group_by) for line in lines]}


@router.get("/v1/reports/top-drivers")
def drivers(
    request: Request, scope: ReportScope, start: Day = None, end: Day = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> dict[str, Any]:
    """The costliest (tenant, model, feature) combinations of the window."""
    span = _window(start, end)
    with sessions_of(request)() as session:
        totals, found = drivers_report(session, span, limit, tenant_id=scope.tenant_id,
                                       feature_tag=settings_of(request).report_feature_tag)
    return {"object": "report.top_drivers", **_scope_dict(scope, span),
            "total_cost_usd": f"{totals.cost_usd:f}", "data": [d.as_dict() for d in found]}


@router.get("/v1/reports/compare")
def compare_windows(
    request: Request, scope: ReportScope,
    baseline_start: Annotated[IsoDay, Query()], baseline_end: Annotated[IsoDay, Query()],
    current_start: Annotated[IsoDay, Query()], current_end: Annotated[IsoDay, Query()],
) -> dict[str, Any]:
    """Baseline vs current: cost per request, tokens per dollar, volume, savings and quality
    signals (failure rate, finish_reason "length" rate, cache hit rates)."""
    before = _window(baseline_start, baseline_end, "baseline_start")
    after = _window(current_start, current_end, "current_start")
    with sessions_of(request)() as session:
        baseline, current, changes = compare_report(
            session, before, after, tenant_id=scope.tenant_id,
            feature_tag=settings_of(request).report_feature_tag)
    return {"object": "report.compare", "tenant": scope.tenant,
            "baseline": {"start": before.start.isoformat(), "end": before.end.isoformat(),
                         **baseline.as_dict()},
            "current": {"start": after.start.isoformat(), "end": after.end.isoformat(),
                        **current.as_dict()},
            "changes": [c.as_dict() for c in changes]}


def _audit(request: Request, scope: Scope, span: Window, margin: float) -> list[AuditLine]:
    with sessions_of(request)() as session:
        return max_tokens_audit(session, span, margin, tenant_id=scope.tenant_id,
                                feature_tag=settings_of(request).report_feature_tag)


@router.get("/v1/reports/max-tokens-audit")
def max_tokens_audit_report(
    request: Request, scope: ReportScope, start: Day = None, end: Day = None,
    margin: Annotated[float, Query(ge=1.0, le=10.0)] = DEFAULT_MARGIN,
) -> dict[str, Any]:
    """Per feature: finish_reason "length" rate, output tokens (p50/p95/p99) against the
    max_tokens asked for, the recommended max_tokens (p99 x margin, rounded up to 16) and
    an upper bound on what it would save."""
    span = _window(start, end)
    lines = _audit(request, scope, span, margin)
    return {"object": "report.max_tokens_audit", **_scope_dict(scope, span),
            "feature_tag": settings_of(request).report_feature_tag, "margin": margin,
            "data": [line.as_dict() for line in lines]}


@router.get("/v1/reports/retry-storms")
def retry_storms_report(
    request: Request, scope: ReportScope, start: Day = None, end: Day = None,
    min_sends: Annotated[int, Query(ge=2, le=100_000)] = 3,
    window_seconds: Annotated[float, Query(gt=0, le=86_400 * 31)] = 3600.0,
) -> dict[str, Any]:
    """The same request (or Idempotency-Key) sent at least `min_sends` times within
    `window_seconds`, and jobs whose SDK said it was retrying, with what the repeats cost
    and would have cost the naive way."""
    span = _window(start, end)
    with sessions_of(request)() as session:
        found = retry_storms(session, span, min_sends, timedelta(seconds=window_seconds),
                             tenant_id=scope.tenant_id,
                             feature_tag=settings_of(request).report_feature_tag)
    return {"object": "report.retry_storms", **_scope_dict(scope, span),
            "min_sends": min_sends, "window_seconds": window_seconds,
            "requests": [s.as_dict() for s in found.requests],
            "idempotency_keys": [k.as_dict() for k in found.idempotency_keys],
            "client_retries": [r.as_dict() for r in found.client_retries]}


class CapOut(BaseModel):
    object: str = "max_tokens_cap"
    feature: str
    max_tokens: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, info: CapInfo) -> CapOut:
        return cls(feature=info.feature, max_tokens=info.max_tokens,
                   created_at=info.created_at, updated_at=info.updated_at)


class CapList(BaseModel):
    object: str = "list"
    data: list[CapOut]


class SetCap(BaseModel):
    """Give `max_tokens`, or `recommended: true` for the max_tokens audit's recommendation
    over the last 30 days."""

    model_config = ConfigDict(extra="forbid")

    feature: Feature
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    recommended: bool = False
    margin: Annotated[float, Field(ge=1.0, le=10.0)] = DEFAULT_MARGIN


def _one_tenant(scope: Scope) -> uuid.UUID:
    if scope.tenant_id is None:
        raise InvalidRequest("caps belong to one tenant: name it with tenant=", param="tenant")
    return scope.tenant_id


@router.get("/v1/max-tokens-caps")
def read_caps(request: Request, scope: ReportScope) -> CapList:
    tenant_id = _one_tenant(scope)
    with sessions_of(request)() as session:
        return CapList(data=[CapOut.of(c) for c in list_caps(session, tenant_id)])


@router.put("/v1/max-tokens-caps")
def put_cap(body: SetCap, request: Request, scope: ReportScope) -> CapOut:
    """Create or replace a feature's cap; intake applies it to that feature's new jobs."""
    tenant_id = _one_tenant(scope)
    cap = body.max_tokens
    if body.recommended == (cap is not None):
        raise InvalidRequest("give either max_tokens or recommended: true",
                             param="max_tokens")
    if cap is None:
        lines = _audit(request, scope, _window(None, None), body.margin)
        found = [line.recommended_max_tokens for line in lines
                 if line.outputs.feature == body.feature]
        if not found or found[0] is None:
            raise InvalidRequest(f"the max_tokens audit recommends no cap for feature "
                                 f"{body.feature!r} over the last 30 days", param="feature")
        cap = found[0]
    with sessions_of(request)() as session:
        info = set_cap(session, tenant_id, body.feature, cap)
        session.commit()
    caps: CapsCache = request.app.state.max_tokens_caps
    caps.forget(tenant_id)
    return CapOut.of(info)


@router.delete("/v1/max-tokens-caps/{cap_id}")
def remove_cap(cap_id: Annotated[StorableText, Path(min_length=1, max_length=200)],
               request: Request, scope: ReportScope) -> dict[str, Any]:
    """A cap's id is the feature it caps."""
    feature = cap_id
    tenant_id = _one_tenant(scope)
    with sessions_of(request)() as session:
        deleted = delete_cap(session, tenant_id, feature)
        session.commit()
    if not deleted:
        raise NotFound(f"no max_tokens cap for feature {feature!r}", param="feature")
    caps: CapsCache = request.app.state.max_tokens_caps
    caps.forget(tenant_id)
    return {"object": "max_tokens_cap.deleted", "feature": feature, "deleted": True}
