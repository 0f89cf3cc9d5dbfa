"""A shorter way through FastAPI for `POST /v1/jobs`, the route every single job takes.

FastAPI's generic request handling (solving the dependencies into keyword arguments,
validating headers and body field by field, parsing the content type again) was about a
third of the app's CPU per single job. On the common path this route does directly what
those steps would conclude: the tenant from the same dependency, the body validated by
the same model. Anything else (an Idempotency-Key header to check, a body that is not
JSON or does not validate, dependency overrides) goes FastAPI's own way, which then
answers exactly as before: the same 401 before any body error, the same per-field 422s.
Nothing is written before that choice is made; only the tenant (cached) was resolved.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from pydantic import BaseModel, ValidationError

from api.json_body import JsonBodyRoute, is_json_content_type

_Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class DirectCreateRoute(JsonBodyRoute):
    """For an async endpoint of exactly this shape, checked when the route is made (a
    parameter added later cannot be silently left out here):
    `(body: <pydantic model>, request: Request, tenant: <async dependency on the request>,
    idempotency_key: <a header, default None>) -> Response`."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        dependant = self.dependant
        tenant = dependant.dependencies[0] if len(dependant.dependencies) == 1 else None
        model = (dependant.body_params[0].field_info.annotation
                 if len(dependant.body_params) == 1 else None)
        if (tenant is None or tenant.name != "tenant" or not tenant.is_coroutine_callable
                or tenant.dependencies or tenant.request_param_name != "request"
                or not isinstance(model, type) or not issubclass(model, BaseModel)
                or dependant.body_params[0].name != "body"
                or [p.name for p in dependant.header_params] != ["idempotency_key"]
                or dependant.request_param_name != "request"
                or not dependant.is_coroutine_callable
                or dependant.path_params or dependant.query_params or dependant.cookie_params
                or dependant.response_param_name or dependant.background_tasks_param_name
                or dependant.http_connection_param_name
                or dependant.security_scopes_param_name):
            raise TypeError(f"{endpoint.__name__} does not have the shape DirectCreateRoute "
                            "serves; use JsonBodyRoute")
        assert tenant.call is not None
        self._tenant_of: Callable[[Request], Coroutine[Any, Any, Any]] = tenant.call
        self._model: type[BaseModel] = model
        self._header = dependant.header_params[0].alias.lower()

    async def shortcut(self, document: Any, request: Request, tenant: Any) -> Response | None:
        """The answer to a body the model would accept, made without the model by a
        subclass that checks the same rules in a cheaper way; None (always, here): the
        model validates the body and the endpoint answers."""
        return None

    async def answer(self, request: Request, generic: _Handler) -> Response:
        overrides = getattr(self.dependency_overrides_provider, "dependency_overrides", None)
        if (request.method != "POST" or overrides or self._header in request.headers
                or not is_json_content_type(request.headers.get("content-type"))
                or not await request.body()):
            return await generic(request)
        document = await request.json()  # parsed and checked already (JsonBodyRoute)
        tenant = await self._tenant_of(request)  # before the body, as FastAPI orders it
        shortcut = await self.shortcut(document, request, tenant)
        if shortcut is not None:
            return shortcut
        try:
            body = self._model.model_validate(document)
        except ValidationError:
            return await generic(request)  # FastAPI's 422, naming each field
        answer = await self.endpoint(body=body, request=request, tenant=tenant,
                                     idempotency_key=None)
        if not isinstance(answer, Response):
            raise TypeError(f"{self.endpoint.__name__} must return a Response")
        return answer
