"""`CauceRoute`: a route class that refuses bodies of the wrong media type with 415."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import params
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from cauce.core.errors import UnsupportedMediaType

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class CauceRoute(APIRoute):
    """A JSON-bodied route answers 415 to anything but JSON, before parsing the body."""

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
            return await handler(request)

        return checked
