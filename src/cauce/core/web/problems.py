"""RFC 9457 problem details: the one renderer for every error a client can see."""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from cauce.core.errors import CauceError, malformed_json

PROBLEM_MEDIA_TYPE = "application/problem+json"
# The key, in the request's `scope["state"]`, of the code of the problem it was answered
# with: the access line says why a request failed (RequestContextMiddleware).
PROBLEM_CODE_STATE = "problem_code"
log = structlog.get_logger("cauce.http")
# How much of a client's value (an id, a header) an error message shows back: enough to
# recognise it, not a 5,000-character id sent back in full.
ECHO_LIMIT = 100
# Every `detail` is held to this, should a message echo a client's value without `echo`.
DETAIL_LIMIT = 1000

# Starlette raises plain HTTPExceptions for routing and protocol failures; each status
# gets the same stable code a CauceError of that status would carry.
_STATUS_CODES: dict[int, tuple[str, str]] = {
    400: ("bad_request", "Bad request"),
    401: ("unauthenticated", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    406: ("not_acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    413: ("payload_too_large", "Payload too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    422: ("validation_failed", "Validation failed"),
    429: ("rate_limited", "Too many requests"),
    500: ("internal_error", "Internal server error"),
    503: ("service_unavailable", "Service unavailable"),
}


def echo(value: str, limit: int = ECHO_LIMIT) -> str:
    """`value`, the client's, as an error message may quote it: at most `limit`
    characters, "…" ending one that was cut."""
    return value if len(value) <= limit else value[:limit] + "…"


def problem_response(
    request: Request | None,
    *,
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    """A problem+json response with Cauce's stable `code` and the request id."""
    body: dict[str, Any] = {
        "type": f"urn:cauce:problem:{code}",
        "title": title,
        "status": status,
        "code": code,
    }
    if detail:
        body["detail"] = echo(detail, DETAIL_LIMIT)
    if request is not None:
        request.scope.setdefault("state", {})[PROBLEM_CODE_STATE] = code
        body["instance"] = request.url.path
        request_id = request.scope.get("state", {}).get("request_id")
        if request_id:
            body["request_id"] = request_id
    body.update(extra)
    return Response(
        orjson.dumps(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


def json_pointer(loc: tuple[int | str, ...]) -> str:
    """RFC 6901 pointer into the body for a pydantic error location; a parameter's is
    `#query/<name>` (or `#path/`, `#header/`), its name escaped the same way."""
    parts = list(loc)
    prefix = ""
    if parts and parts[0] in ("body", "query", "path", "header"):
        where, parts = parts[0], parts[1:]
        if where != "body":
            prefix = f"#{where}"
    # A query parameter may be named `a/b`: unescaped, its pointer would name `b` in `a`.
    return prefix + "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts)


async def _cauce_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CauceError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(retry_after, int):  # `Overloaded`, `IdempotencyKeyInUse`: try again then
        headers = {"Retry-After": str(retry_after)}
    return problem_response(
        request,
        status=exc.status_code,
        code=exc.code,
        title=exc.title,
        detail=exc.detail,
        headers=headers,
        **exc.extra,
    )


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at this path, asked of the routes themselves (a
    route, or an included router, matches a method fully or not). Starlette's 405 names
    only the first matching route's (`GET` for `/v1/leads/{id}`, which takes PATCH and
    DELETE too)."""
    scope = {
        "type": "http",
        "path": request.scope["path"],
        "root_path": request.scope.get("root_path", ""),
    }
    allowed = []
    for method in _METHODS:
        probe = {**scope, "method": method}
        if any(route.matches(probe)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code, title = _STATUS_CODES.get(exc.status_code, ("http_error", "HTTP error"))
    detail = (
        exc.detail if isinstance(exc.detail, str) and exc.detail.lower() != title.lower() else None
    )
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 405 and (allowed := _allowed_methods(request)):
        headers = {**(headers or {}), "Allow": ", ".join(allowed)}
        detail = f"{request.method} is not allowed here; this path takes {', '.join(allowed)}"
    return problem_response(
        request,
        status=exc.status_code,
        code=code,
        title=title,
        detail=detail,
        headers=headers,
    )


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    malformed = malformed_json(errors)
    if malformed is not None:
        return await _cauce_error(request, malformed)
    items = [
        {
            "pointer": json_pointer(tuple(e.get("loc", ()))),
            "detail": str(e.get("msg", "invalid")),
            "type": str(e.get("type", "invalid")),
        }
        for e in errors
    ]
    return problem_response(
        request,
        status=422,
        code="validation_failed",
        title="Validation failed",
        detail=f"{len(items)} field(s) are invalid",
        errors=items,
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Last resort: RequestContextMiddleware normally answers first, with the request id.
    log.error("http.unhandled_error", exc_info=exc, path=request.url.path)
    return problem_response(
        request,
        status=500,
        code="internal_error",
        title="Internal server error",
        detail="an unexpected error occurred; quote the request id when reporting it",
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Render every error as problem+json, including Starlette's and unexpected ones."""
    app.add_exception_handler(CauceError, _cauce_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
