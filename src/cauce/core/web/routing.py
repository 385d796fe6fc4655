"""`CauceRoute`: a route class that refuses bodies of the wrong media type with 415, and
answers a JSON body FastAPI cannot read with 400 `malformed_body`."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import params
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from cauce.core.errors import MalformedBody, UnsupportedMediaType, malformed_json

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _unreadable(exc: HTTPException) -> MalformedBody | None:
    """The `malformed_body` of a JSON body FastAPI failed to read for a reason other than
    its syntax (None for any other exception).

    FastAPI turns a syntax error into a validation error (`json_invalid`, rendered as
    `malformed_body` like the leads routes' own reading), but any other failure of
    `json.loads` (a body that is not UTF-8, or nested past the recursion limit) into a
    bare 400 "There was an error parsing the body", chained to the cause."""
    cause = exc.__cause__
    if exc.status_code != 400 or not isinstance(cause, ValueError | RecursionError):
        return None
    if isinstance(cause, UnicodeDecodeError):
        error: dict[str, Any] = {"type": "json_invalid", "loc": ("body", cause.start)}
        error["ctx"] = {"error": "invalid UTF-8"}
    elif isinstance(cause, RecursionError):
        error = {"type": "json_invalid", "ctx": {"error": "nested too deeply"}}
    else:  # a number past Python's digit limit
        error = {"type": "json_invalid", "ctx": {"error": "a value that cannot be read"}}
    return malformed_json([error])


class CauceRoute(APIRoute):
    """A JSON-bodied route answers 415 to anything but JSON, before parsing the body,
    and 400 `malformed_body` to a body it cannot read as JSON (ADR 0003)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        field = self.body_field
        if field is None or isinstance(field.field_info, params.Form | params.File):
            return handler

        async def checked(request: Request) -> Response:
            if request.method in _BODY_METHODS and not _is_json(
                request.headers.get("content-type", "")
            ):
                raise UnsupportedMediaType("this endpoint accepts application/json bodies only")
            try:
                return await handler(request)
            except HTTPException as exc:
                malformed = _unreadable(exc)
                if malformed is None:
                    raise
                raise malformed from None

        return checked
