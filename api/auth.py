"""Who is calling: API key -> tenant. With no keys configured every caller is "default"."""

from __future__ import annotations

from fastapi import Request

from penny.errors import Unauthorized
from penny.settings import Settings

DEFAULT_TENANT = "default"


def tenant_for_request(request: Request) -> str:
    settings: Settings = request.app.state.settings
    if not settings.api_keys:
        return DEFAULT_TENANT
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key:
        # The Anthropic SDK sends its key in x-api-key.
        key = request.headers.get("x-api-key", "")
    if not key:
        raise Unauthorized("send your API key as 'Authorization: Bearer <key>' or 'x-api-key'")
    tenant = settings.api_keys.get(key.strip())
    if tenant is None:
        raise Unauthorized("the API key is not valid")
    return tenant
