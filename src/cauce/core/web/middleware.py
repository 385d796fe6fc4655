"""The outermost request middleware: request id, log context, access log, metrics, body
limit, refused content codings, and clients that leave before their body arrives.

Written as plain ASGI (not `BaseHTTPMiddleware`) because it runs on every request and
must stay cheap; see benchmarks/auth_overhead.py.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

import structlog
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cauce.core.observability.metrics import HttpMetrics
from cauce.core.web.problems import echo, problem_response

access_log = structlog.get_logger("cauce.access")
log = structlog.get_logger("cauce.http")
_INTERNAL_DETAIL = "an unexpected error occurred; quote the request id when reporting it"
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_UNAVAILABLE_DETAIL = "the database did not answer (lost connection or busy); retry shortly"
RETRY_AFTER_SECONDS = 1
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# The status recorded (access log, `cauce_http_requests_total`) for a request whose
# client closed the connection before its body had all arrived. Never sent: nobody is
# left to read it. It is nginx's "499 Client Closed Request", the convention log tools
# and dashboards already know. Not 500: nothing failed on our side, and a flaky mobile
# network must not page anyone or eat the 5xx error budget. Not 400: the request was
# not wrong, only unfinished.
CLIENT_CLOSED_REQUEST = 499


def _database_unavailable(exc: Exception) -> bool:
    """A lost connection (PostgreSQL restarted, the network dropped it) or a database
    that is not answering ("database is locked" past SQLite's busy timeout, connection
    refused): the client can retry, so 503, not 500. Everything was rolled back."""
    return isinstance(exc, DBAPIError) and (
        exc.connection_invalidated or isinstance(exc, OperationalError)
    )


class RequestContextMiddleware:
    """Bind a request id to the logs and response, enforce the body limit, record metrics."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: HttpMetrics,
        max_body_bytes: int,
        body_limits: Mapping[str, int] | None = None,
        access_log_enabled: bool = True,
    ) -> None:
        """`body_limits` replaces `max_body_bytes` for the paths it names (an upload
        endpoint that streams its body and enforces its own, larger, limit)."""
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.body_limits = dict(body_limits or {})
        self.access_log_enabled = access_log_enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = self._request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 500
        status_sent = False
        raw_id = request_id.encode()

        async def send_with_id(message: Message) -> None:
            nonlocal status, status_sent
            if message["type"] == "http.response.start":
                status = message["status"]
                status_sent = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", raw_id))
                message["headers"] = headers
            await send(message)

        gone_error: str | None = None
        self.metrics.in_flight.inc()
        body = _BodyReceiver(receive, self.body_limits.get(scope["path"], self.max_body_bytes))
        try:
            declared = self._content_length(scope)
            if declared is not None and declared > body.limit:
                await self._reject_too_large(scope, send_with_id, body.limit)
            elif _has_nul(scope):
                await self._send_problem(
                    scope,
                    send_with_id,
                    400,
                    "nul_in_url",
                    "Bad request",
                    "the URL holds a NUL character (%00), which no id or filter can contain",
                )
            elif (coding := _content_coding(scope)) is not None:
                await self._reject_coding(scope, send_with_id, coding)
            else:
                await self.app(scope, body, send_with_id)
        except ClientDisconnect:
            # Starlette's word for a client that left while a handler read its body
            # (`request.body()`, `request.form()`) or streamed it an answer. Cut short
            # mid-body, nothing was written: the handler's unit of work rolls back on the
            # way out, and no handler claims an Idempotency-Key before it has the whole
            # body, so a retry with the same key is a fresh request. `finally` says 499.
            body.client_gone = True
        except Exception as exc:
            if body.client_gone:
                # What a handler made of a body cut short (FastAPI turns the disconnect
                # into a 400 "error parsing the body" for declared bodies; a handler may
                # wrap it): the same 499, with the exception's class for the curious.
                gone_error = type(exc).__name__
                return
            # Handled here rather than by Starlette's ServerErrorMiddleware, which re-raises
            # to the server: one log line with the request id, and never a traceback out.
            log.error("http.unhandled_error", exc_info=exc, path=scope.get("path"))
            if status_sent:
                raise
            if _database_unavailable(exc):
                status = 503
                await self._send_problem(
                    scope,
                    send_with_id,
                    503,
                    "database_unavailable",
                    "Database unavailable",
                    _UNAVAILABLE_DETAIL,
                    retry_after=RETRY_AFTER_SECONDS,
                )
            else:
                status = 500
                await self._send_problem(
                    scope,
                    send_with_id,
                    500,
                    "internal_error",
                    "Internal server error",
                    _INTERNAL_DETAIL,
                )
        finally:
            self.metrics.in_flight.dec()
            if body.client_gone:
                # Whatever the app answered (FastAPI's 400 for a declared body cut short),
                # nobody read it. Info, not a warning: clients on bad networks do this
                # every day, and the 499s in the metric show a trend worth a look.
                status = CLIENT_CLOSED_REQUEST
                log.info("http.client_disconnected", path=scope.get("path"), error=gone_error)
            elapsed = time.perf_counter() - start
            template = self._route_template(scope)
            self.metrics.observe(scope["method"], template, status, elapsed)
            if self.access_log_enabled:
                access_log.info(
                    "http.request",
                    method=scope["method"],
                    route=template,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )
            structlog.contextvars.clear_contextvars()

    @staticmethod
    def _route_template(scope: Scope) -> str:
        # FastAPI puts the matched APIRoute in the scope; plain Starlette routes (the docs)
        # only leave their endpoint, and their paths are fixed. Anything unmatched is one
        # label, so scanners cannot blow up the metric's cardinality.
        route = scope.get("route")
        if route is not None:
            return str(route.path)
        if "endpoint" in scope:
            return str(scope["path"])
        return "<unmatched>"

    @staticmethod
    def _request_id(scope: Scope) -> str:
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                text: str = value.decode("latin-1")
                if _REQUEST_ID_RE.match(text):
                    return text
                break
        return uuid.uuid4().hex

    @staticmethod
    def _content_length(scope: Scope) -> int | None:
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return None
        return None

    async def _reject_coding(self, scope: Scope, send: Send, coding: str) -> None:
        await self._send_problem(
            scope,
            send,
            415,
            "unsupported_content_encoding",
            "Unsupported content encoding",
            f"the body is sent with Content-Encoding: {echo(coding)}; only identity "
            "(uncompressed) bodies are read",
            # RFC 9110 15.5.16: name the codings that would have been accepted.
            headers={"accept-encoding": "identity"},
        )

    async def _reject_too_large(self, scope: Scope, send: Send, limit: int) -> None:
        await self._send_problem(
            scope,
            send,
            413,
            "payload_too_large",
            "Payload too large",
            f"the body exceeds {limit} bytes",
            # Close the connection: the client may still be sending a body we will not read.
            close=True,
        )

    @staticmethod
    async def _send_problem(
        scope: Scope,
        send: Send,
        status: int,
        code: str,
        title: str,
        detail: str,
        *,
        close: bool = False,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        response = problem_response(
            Request(scope), status=status, code=code, title=title, detail=detail, headers=headers
        )
        if close:
            response.headers["connection"] = "close"
        if retry_after is not None:
            response.headers["retry-after"] = str(retry_after)
        await response(scope, _no_receive, send)


class _BodyReceiver:
    """The app's `receive`: cuts the body off past `limit` (413), and notes a client
    that disconnected before the last chunk of its body (`client_gone`)."""

    __slots__ = ("client_gone", "complete", "limit", "receive", "seen")

    def __init__(self, receive: Receive, limit: int) -> None:
        self.receive = receive
        self.limit = limit
        self.seen = 0
        self.complete = False
        self.client_gone = False

    async def __call__(self) -> Message:
        message = await self.receive()
        kind = message["type"]
        if kind == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.limit:
                # HTTPException passes through FastAPI's body parsing untouched and is
                # rendered as problem+json (413) by the app's handlers.
                raise HTTPException(413, f"the body exceeds {self.limit} bytes")
            if not message.get("more_body", False):
                self.complete = True
        elif kind == "http.disconnect" and not self.complete:
            # Only mid-body: a disconnect after the whole body (a streamed download
            # watching for it) is a request that was answered, or is being answered.
            self.client_gone = True
        return message


def _has_nul(scope: Scope) -> bool:
    # PostgreSQL text cannot hold NUL: a filter or id with one would fail as a 500.
    query: bytes = scope.get("query_string", b"")
    return "\x00" in scope["path"] or b"%00" in query


def _content_coding(scope: Scope) -> str | None:
    """The request's Content-Encoding when its body is encoded (gzip, br...), None when
    it has no body or a plain one: identity is the only coding any route reads. Read as
    JSON, a gzip body would be a misleading 400 "not valid JSON"."""
    coding: str | None = None
    length: bytes | None = None
    chunked = False
    for name, value in scope["headers"]:
        if name == b"content-encoding":
            text = value.decode("latin-1").strip()
            if any(c.strip().lower() not in ("", "identity") for c in text.split(",")):
                coding = text if coding is None else f"{coding}, {text}"
        elif name == b"content-length":
            length = value.strip()
        elif name == b"transfer-encoding":
            chunked = True
    if coding is None:
        return None
    # A body is there if its length says so, or it is chunked; over HTTP/2 a POST may
    # carry one with neither header. `Content-Length: 0` (or a bodiless GET) has none.
    if length is not None:
        has_body = length.lstrip(b"0") != b""
    else:
        has_body = chunked or scope["method"] in _BODY_METHODS
    return coding if has_body else None


async def _no_receive() -> Any:
    return {"type": "http.disconnect"}
