"""Reading JSON request bodies with a precise answer for each way one can be unreadable.

FastAPI parses bodies itself and answers anything but a syntax error (bytes that are not
UTF-8, nesting that exhausts the parser's recursion) with a bare "There was an error
parsing the body". Routes of this class parse the body first with `intake.text.load_json`,
so such a body gets a 400 saying what is wrong and where, and FastAPI then validates the
document parsed here instead of parsing it again.
"""

from __future__ import annotations

import email.message
import functools
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from intake.text import load_json
from penny.settings import Settings

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@functools.lru_cache(maxsize=64)
def is_json_content_type(content_type: str | None) -> bool:
    # Matches FastAPI's own rule for which bodies it reads as JSON. Parsing the header
    # with `email` costs more than the rest of this route class; clients send a handful
    # of distinct values, so each is parsed once.
    if content_type is None:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json"))


class _CheckedJsonRequest(Request):
    """A request whose `json()` is `load_json` with the deployment's depth limit."""

    _document: Any

    async def json(self) -> Any:
        if not hasattr(self, "_document"):
            settings: Settings = self.app.state.settings
            self._document = load_json(await self.body(), settings.max_json_depth)
        return self._document


class JsonBodyRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            checked_request = _CheckedJsonRequest(request.scope, request.receive)
            if (request.method in _BODY_METHODS
                    and is_json_content_type(request.headers.get("content-type"))):
                body = await checked_request.body()
                if body:
                    # Raises InvalidJson here, outside FastAPI's body handling, so the
                    # error handlers answer it with its own message.
                    await checked_request.json()
            return await self.answer(checked_request, handler)

        return checked

    async def answer(self, request: Request,
                     generic: Callable[[Request], Coroutine[Any, Any, Response]]) -> Response:
        """Answer a request whose JSON body (if any) has been parsed: FastAPI's own
        handling (`generic`), unless a subclass knows a shorter way."""
        return await generic(request)
