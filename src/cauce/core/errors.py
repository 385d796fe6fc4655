"""The error taxonomy: every expected failure is a `CauceError` with a status and a stable code.

Clients branch on `code`, never on `title` or `detail`, so codes never change once
published. The HTTP layer renders every error as RFC 9457 `application/problem+json`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar


class ConfigError(Exception):
    """The configuration is invalid; start-up stops with this one-line message."""


class CauceError(Exception):
    """Base of every error a client may see."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal server error"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra


class BadRequest(CauceError):
    """The request is malformed (not a schema violation: that is `ValidationFailed`)."""

    status_code = 400
    code = "bad_request"
    title = "Bad request"


class MalformedBody(BadRequest):
    """The body is not parseable JSON."""

    code = "malformed_body"
    title = "Malformed request body"


def malformed_json(
    errors: Iterable[Mapping[str, Any]], pointer: str = "", what: str = "the body"
) -> MalformedBody | None:
    """The `MalformedBody` for pydantic errors that say the JSON itself is broken (None
    otherwise): its one error points at `pointer` ("" is the whole body) and says where
    the parser stopped, e.g. "EOF while parsing a value at line 1 column 6"."""
    for error in errors:
        if error.get("type") == "json_invalid":
            context = error.get("ctx") or {}
            reason = str(context.get("error") or "not valid JSON")
            where = error.get("loc") or ()
            if where and isinstance(where[-1], int):  # FastAPI's parse: a character offset
                reason += f" at offset {where[-1]}"
            return MalformedBody(
                f"{what} is not valid JSON: {reason}",
                errors=[{"pointer": pointer, "detail": reason, "type": "json_invalid"}],
            )
    return None


class Unauthenticated(CauceError):
    """No valid credentials."""

    status_code = 401
    code = "unauthenticated"
    title = "Authentication required"


class Forbidden(CauceError):
    """Valid credentials without the needed scope."""

    status_code = 403
    code = "forbidden"
    title = "Forbidden"


class NotFound(CauceError):
    """The resource does not exist (or the caller may not know it does)."""

    status_code = 404
    code = "not_found"
    title = "Not found"


class MethodNotAllowed(CauceError):
    """The route exists, the method does not."""

    status_code = 405
    code = "method_not_allowed"
    title = "Method not allowed"


class Conflict(CauceError):
    """The request conflicts with the current state."""

    status_code = 409
    code = "conflict"
    title = "Conflict"


class PayloadTooLarge(CauceError):
    """The body is larger than the configured limit."""

    status_code = 413
    code = "payload_too_large"
    title = "Payload too large"


class UnsupportedMediaType(CauceError):
    """The body's content type is not one this route accepts."""

    status_code = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"


class ValidationFailed(CauceError):
    """The payload breaks the schema; `errors` lists each field (JSON pointer) and why."""

    status_code = 422
    code = "validation_failed"
    title = "Validation failed"


class TooManyRequests(CauceError):
    """This caller has more work waiting than it may have; try again after `retry_after`
    seconds (sent as the `Retry-After` header). Others are still served."""

    status_code = 429
    code = "rate_limited"
    title = "Too many requests"
    retry_after: ClassVar[int] = 1


class ServiceUnavailable(CauceError):
    """A dependency is down; try again later."""

    status_code = 503
    code = "service_unavailable"
    title = "Service unavailable"


class Overloaded(ServiceUnavailable):
    """More work is waiting than the server takes on; try again after `retry_after`
    seconds (sent as the `Retry-After` header)."""

    code = "overloaded"
    title = "Server busy"
    retry_after: ClassVar[int] = 1


class BadGateway(CauceError):
    """An upstream Cauce depends on answered badly or not at all."""

    status_code = 502
    code = "bad_gateway"
    title = "Bad gateway"


class GatewayTimeout(CauceError):
    """An upstream Cauce depends on did not answer in time."""

    status_code = 504
    code = "gateway_timeout"
    title = "Gateway timeout"
